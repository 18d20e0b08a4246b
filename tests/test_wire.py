"""Low-precision wire (``wire_dtype``) for the gossip algorithms, on the simulator."""

import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from oracles import ALGORITHM_CASES, LeastSquares, WireTopology, dense_trajectory

N, LR, STEPS = 6, 0.05, 100
GOSSIP_CASES = [(a, kw) for a, kw in ALGORITHM_CASES if a in ("DSGD", "DmSGD", "DecentLaM", "QGDmSGD", "D2")]


def run(problem, topo, algorithm, steps, **kwargs):
    results = Simulator(problem.n).run(problem.worker, algorithm, steps, lr=LR, topology=topo, **kwargs)
    return np.stack([traj for traj, _ in results])


@pytest.mark.parametrize("algorithm, kwargs", GOSSIP_CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_trajectory_equals_the_dense_rule_with_rounded_neighbours(algorithm, kwargs, dtype):
    problem, topo = LeastSquares(N, seed=5), T.ring(N)
    got = run(problem, topo, algorithm, STEPS, wire_dtype=dtype, **kwargs)
    want = dense_trajectory(problem, algorithm, WireTopology(topo, dtype), STEPS, LR, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    exact = dense_trajectory(problem, algorithm, topo, STEPS, LR, **kwargs)
    assert np.abs(want - exact).max() > 1e-4                 # the rounding is visible: not a float64 wire


def test_names_are_accepted_and_bad_uses_refused():
    def node(comm, algorithm, wire_dtype):
        opt = optim.by_name(algorithm)([torch.zeros(3, requires_grad=True)], lr=0.1, comm=comm, wire_dtype=wire_dtype)
        return opt.wire_dtype

    assert Simulator(2).run(node, "DSGD", "bfloat16") == [torch.bfloat16] * 2
    for algorithm, wire, message in [("PmSGD", torch.float16, "PmSGD does not gossip: wire_dtype applies"),
                                     ("DSGD", "int8", "invalid wire_dtype 'int8': use one of bfloat16, float16")]:
        with pytest.raises(RuntimeError) as info:
            Simulator(2).run(node, algorithm, wire)
        assert message in str(info.value.__cause__)


def test_ranks_must_agree_on_the_wire():
    def node(comm):
        optim.DSGD([torch.zeros(3, requires_grad=True)], lr=0.1, comm=comm,
                   wire_dtype=torch.bfloat16 if comm.rank else None)

    with pytest.raises(RuntimeError) as info:
        Simulator(2).run(node)
    assert "the wire dtype differs between ranks: 'None' on rank 0, 'torch.bfloat16' on rank 1" in str(info.value.__cause__)


def test_the_wire_carries_half_the_bytes_of_float32():
    def node(comm, wire_dtype):
        sent, inner = [], comm._start_neighbor_allgather
        comm._start_neighbor_allgather = lambda plan, s, r: sent.append(s.numel() * s.element_size()) or inner(plan, s, r)
        p = torch.zeros(1000, requires_grad=True)
        opt = optim.DSGD([p], lr=0.1, comm=comm, topology=T.ring(4), wire_dtype=wire_dtype)
        p.grad = torch.ones(1000)
        opt.step()
        return sum(sent)

    full, half = (Simulator(4).run(node, w)[0] for w in (None, torch.bfloat16))
    assert full == 4000 and half == 2000


def test_fixed_point_moves_by_the_rounding_only():
    """DSGD on exact gradients with a bf16 wire settles near its float64 fixed point: within
    a few units of bf16 rounding of the models, and the consensus estimate sees the rounding."""
    problem, topo = LeastSquares(N, seed=2), T.ring(N)
    exact = run(problem, topo, "DSGD", 1500)[:, -1]
    low = run(problem, topo, "DSGD", 1500, wire_dtype=torch.bfloat16)
    unit = 2.0 ** -8 * np.abs(exact).max()                  # bf16 rounding of the largest weight
    assert 1e-6 < np.abs(low[:, -1] - exact).max() < 20 * unit
