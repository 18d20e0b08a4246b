"""Issue 19's algorithms (GT, DiLoCo, SGP, OSGP) on real MPI ranks: each equals its dense recursion and the
simulator."""

import numpy as np
import pytest

from mpidec import topology as T
from mpidec.comm import Simulator
from beyond_oracles import diloco_trajectory, gt_trajectory, sgp_trajectory
from oracles import LeastSquares

pytestmark = pytest.mark.mpi(min_size=2)
LR, STEPS = 0.05, 60


def check(comm, problem, algorithm, topo, want, **kwargs):
    """This rank's trajectory equals row ``comm.rank`` of ``want`` and the simulator's."""
    mine, _ = problem.worker(comm, algorithm, STEPS, topology=topo, **kwargs)
    np.testing.assert_allclose(mine, want[comm.rank], rtol=1e-10, atol=1e-10)
    simulated = Simulator(comm.size).run(problem.worker, algorithm, STEPS, topology=topo, **kwargs)
    np.testing.assert_allclose(mine, simulated[comm.rank][0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("topology", ["ring", "random_matching"])
def test_mpi_gradient_tracking(comm, topology):
    topo, problem = T.build(topology, comm.size), LeastSquares(comm.size, seed=21)
    want = gt_trajectory(problem, topo, STEPS, LR, 0.8, True)
    check(comm, problem, "GT", topo, want, lr=LR, momentum=0.8, nesterov=True)


@pytest.mark.parametrize("kwargs", [{"inner": "AdamW", "weight_decay": 0.01, "period": 4},
                                    {"momentum": 0.8, "period": 3, "averaging": "gossip"}], ids=str)
def test_mpi_diloco(comm, kwargs):
    topo, problem = T.ring(comm.size), LeastSquares(comm.size, seed=22)
    problem.x0[:] = problem.x0[0]
    want = diloco_trajectory(problem, topo, STEPS, LR, **kwargs)
    check(comm, problem, "DiLoCo", topo, want, lr=LR, **kwargs)


@pytest.mark.parametrize("topology", ["random_push", "one_peer_exponential"])
def test_mpi_sgp(comm, topology):
    topo = T.random_push(comm.size, seed=3) if topology == "random_push" else T.build(topology, comm.size)
    problem = LeastSquares(comm.size, seed=23)
    want, _ = sgp_trajectory(problem, topo, STEPS, LR, 0.8)
    check(comm, problem, "SGP", topo, want, lr=LR, momentum=0.8)


@pytest.mark.parametrize("delay", [1, 2])
@pytest.mark.parametrize("topology", ["random_push", "one_peer_exponential"])
def test_mpi_osgp(comm, topology, delay):
    """OSGP's pushes are non-blocking neighbour allgathers waited for delay steps later."""
    topo = T.random_push(comm.size, seed=3) if topology == "random_push" else T.build(topology, comm.size)
    problem = LeastSquares(comm.size, seed=24)
    want, _ = sgp_trajectory(problem, topo, STEPS, LR, 0.8, delay=delay)
    check(comm, problem, "OSGP", topo, want, lr=LR, momentum=0.8, delay=delay)
