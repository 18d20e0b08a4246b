"""Every optimizer on 4 real MPI ranks equals the dense recursion and the simulator."""

import numpy as np
import pytest

from mpidec import topology as T
from mpidec.comm import Simulator
from oracles import ALGORITHM_CASES, LeastSquares, dense_trajectory, mlp_worker

pytestmark = pytest.mark.mpi(min_size=2)
LR, STEPS = 0.05, 110


@pytest.mark.parametrize("algorithm, kwargs", ALGORITHM_CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("topology", ["ring", "random_matching"])
def test_mpi_trajectory_equals_dense_and_simulator(comm, algorithm, kwargs, topology):
    n = comm.size
    topo = T.build(topology, n)
    problem = LeastSquares(n, seed=21)
    mine, _ = problem.worker(comm, algorithm, STEPS, lr=LR, topology=topo, **kwargs)
    want = dense_trajectory(problem, algorithm, topo, STEPS, LR, **kwargs)[comm.rank]
    np.testing.assert_allclose(mine, want, rtol=1e-10, atol=1e-10)
    simulated = Simulator(n).run(problem.worker, algorithm, STEPS, lr=LR, topology=topo, **kwargs)
    np.testing.assert_allclose(mine, simulated[comm.rank][0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm, kwargs", [("DecentLaM", {"momentum": 0.9}), ("PmSGD", {"momentum": 0.9})])
def test_mpi_overlapped_buckets_equal_the_simulator(comm, algorithm, kwargs):
    mine, buckets, averaged = mlp_worker(comm, algorithm, overlap=True, bucket_bytes=100, **kwargs)
    assert buckets >= 3 and all(averaged) == (algorithm == "PmSGD")
    simulated = Simulator(comm.size).run(mlp_worker, algorithm, overlap=False,
                                                            bucket_bytes=float("inf"), **kwargs)
    np.testing.assert_allclose(mine, simulated[comm.rank][0], rtol=1e-12, atol=1e-12)
