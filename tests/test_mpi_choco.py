"""Compressed gossip on real MPI ranks: CHOCO (identity = DSGD, MPI = simulator bit for bit, bytes
through MPI) and the low-precision wire of the gossip algorithms."""

import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from oracles import LeastSquares, WireTopology, count_at_the_transport, dense_trajectory, stop_counting

pytestmark = pytest.mark.mpi(min_size=2)
LR, STEPS = 0.05, 50


@pytest.mark.parametrize("momentum", [0.0, 0.8])
def test_mpi_identity_with_gamma_one_is_dsgd(comm, momentum):
    topo, problem = T.ring(comm.size), LeastSquares(comm.size, seed=31)
    mine, _ = problem.worker(comm, "CHOCO", STEPS, lr=LR, topology=topo, compressor="identity", gamma=1.0,
                             momentum=momentum)
    want = dense_trajectory(problem, "DmSGD", topo, STEPS, LR, momentum=momentum)[comm.rank]
    np.testing.assert_allclose(mine, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("compressor, ratio", [("identity", 1.0), ("top_k", 0.5), ("random_k", 0.5), ("sign", 1.0),
                                               ("int8", 1.0)])
def test_mpi_equals_the_simulator_bit_for_bit(comm, compressor, ratio):
    topo, problem = T.exponential(comm.size), LeastSquares(comm.size, seed=32)
    options = dict(lr=LR, topology=topo, compressor=compressor, ratio=ratio, gamma=0.4, momentum=0.5)
    mine, _ = problem.worker(comm, "CHOCO", STEPS, **options)
    simulated = Simulator(comm.size).run(problem.worker, "CHOCO", STEPS, **options)
    np.testing.assert_array_equal(mine, simulated[comm.rank][0])
    assert np.abs(mine[-1] - mine[0]).max() > 0.1


def test_mpi_bytes_through_the_transport_are_the_payload(comm):
    size, topo = 10_000, T.ring(comm.size)
    measured, counted = {}, count_at_the_transport(comm)
    try:
        for compressor in ("identity", "top_k", "sign"):
            p = torch.zeros(size, requires_grad=True)
            opt = optim.CHOCO([p], lr=0.1, comm=comm, topology=topo, compressor=compressor, ratio=0.01)
            p.grad = torch.randn(size, generator=torch.Generator().manual_seed(comm.rank))
            before = counted[0]
            opt.step()
            assert counted[0] - before == opt.last_step_bytes
            measured[compressor] = counted[0] - before
    finally:
        stop_counting(comm)
    degree = len(topo.out_neighbors(comm.rank))
    assert measured["identity"] == degree * size * 4
    assert measured["top_k"] / measured["identity"] == pytest.approx(0.02)
    assert measured["sign"] / measured["identity"] == pytest.approx(1 / 32, abs=2e-4)


@pytest.mark.parametrize("algorithm, kwargs", [("DSGD", {}), ("DecentLaM", {"momentum": 0.8})])
def test_mpi_low_precision_wire_equals_the_dense_rule_and_the_simulator(comm, algorithm, kwargs):
    topo, problem = T.ring(comm.size), LeastSquares(comm.size, seed=33)
    options = dict(lr=LR, topology=topo, wire_dtype=torch.bfloat16, **kwargs)
    mine, _ = problem.worker(comm, algorithm, STEPS, **options)
    want = dense_trajectory(problem, algorithm, WireTopology(topo, torch.bfloat16), STEPS, LR, **kwargs)[comm.rank]
    np.testing.assert_allclose(mine, want, rtol=1e-10, atol=1e-10)
    simulated = Simulator(comm.size).run(problem.worker, algorithm, STEPS, **options)
    np.testing.assert_array_equal(mine, simulated[comm.rank][0])
