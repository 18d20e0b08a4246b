"""Gradient tracking (issue 19) on the simulator: the dense recursion, the exact minimiser
where D2 diverges, one fused exchange per step, resume."""

import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from beyond_oracles import gt_trajectory
from oracles import LeastSquares, assert_resume_is_bit_identical, simulate
from oracles import dense_trajectory

N, LR = 6, 0.05
CASES = [{}, {"momentum": 0.8}, {"momentum": 0.8, "nesterov": True}, {"momentum": 0.5, "weight_decay": 0.0}]


def wide_ring(n):
    """An even ring whose neighbours weigh 0.4 each: lambda_min = 0.2 - 0.8 = -0.6 < -1/3."""
    w = 0.2 * np.eye(n)
    for d in (1, -1):
        w[np.arange(n), (np.arange(n) + d) % n] = 0.4
    return T.from_matrix(w, name="wide ring")


@pytest.mark.parametrize("kwargs", CASES, ids=str)
@pytest.mark.parametrize("topo", [T.ring(N), T.exponential(N), T.random_matching(N, seed=5)],
                         ids=["ring", "exponential", "matching"])
def test_trajectory_equals_dense_recursion(kwargs, topo):
    problem = LeastSquares(N, seed=1)
    got, _ = simulate(problem, topo, "GT", 120, lr=LR, **kwargs)
    want = gt_trajectory(problem, topo, 120, LR, kwargs.get("momentum", 0.0), kwargs.get("nesterov", False))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert np.abs(want[:, -1] - want[:, 0]).max() > 0.1


@pytest.mark.parametrize("momentum", [0.0, 0.8])
def test_reaches_the_exact_minimiser_where_d2_diverges(momentum):
    problem, topo, lr = LeastSquares(N, seed=3), wide_ring(N), 0.3 * (1 - momentum)
    assert T.lambda_min(topo.W) < -1 / 3
    got, _ = simulate(problem, topo, "GT", 200, lr=lr, momentum=momentum)
    np.testing.assert_allclose(got[:, -1], np.broadcast_to(problem.minimiser(), (N, problem.dim)), atol=1e-8)
    # the others by their dense rules (tests/test_optim.py checks the optimizers against them)
    for d2_lr in (lr, lr / 20):
        assert not np.abs(dense_trajectory(problem, "D2", topo, 200, d2_lr)[:, -1]).max() < 1e6  # diverged
    assert np.abs(dense_trajectory(problem, "DSGD", topo, 200, lr)[:, -1] - problem.minimiser()).max() > 1e-2


def test_tracker_and_model_travel_together_in_place():
    """Per step and dtype: one message of the model and one of the tracker, each sent from
    its flat buffer (no packing)."""
    def node(comm):
        params = [torch.zeros(3, dtype=torch.float64, requires_grad=True), torch.zeros(2, requires_grad=True)]
        opt = optim.GT(params, lr=0.1, momentum=0.9, comm=comm, topology=T.ring(comm.size))
        events = []
        start = comm._start_neighbor_allgather
        comm._start_neighbor_allgather = lambda plan, send, recv: events.append(send.data_ptr()) or start(plan, send, recv)
        for _ in range(3):
            sum(p.sum() for p in params).backward()
            opt.step()
            events.append("step")
        flat = {t.data_ptr() for t in opt._layout.slices(params) + opt._layout.slices(params, "tracker")}
        return events, flat, sorted(opt.state[params[0]])

    for events, flat, state in Simulator(4).run(node):
        assert events == [*events[:4], "step"] * 3 and set(events[:4]) == flat  # 2 dtypes x (model, tracker)
        assert state == ["momentum_buffer", "prev_grad", "tracker"]


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.8, "nesterov": True}], ids=str)
def test_resume_from_state_dict_is_bit_identical(kwargs):
    assert_resume_is_bit_identical(LeastSquares(N, seed=5), "GT", T.random_matching(N, seed=9), 17, 23, lr=LR, **kwargs)


def test_refuses_push_sum_topologies():
    comm = Simulator(4).comms[0]
    with pytest.raises(T.TopologyError, match="GT needs a doubly stochastic topology.*use SGP"):
        optim.GT([torch.zeros(2, requires_grad=True)], lr=0.1, topology=T.random_push(4), comm=comm)
