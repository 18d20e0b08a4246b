"""Optimizers on the simulator: trajectories, fixed points, resume, bad input."""

import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from oracles import ALGORITHM_CASES, LeastSquares, assert_resume_is_bit_identical, dense_trajectory, simulate

N, LR, STEPS = 6, 0.05, 120


def run(problem, topo, algorithm, steps, **kwargs):
    return simulate(problem, topo, algorithm, steps, lr=LR, **kwargs)


@pytest.mark.parametrize("algorithm, kwargs", ALGORITHM_CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("topo", [T.ring(N), T.one_peer_exponential(N), T.random_matching(N, seed=5)],
                         ids=["ring", "one_peer", "matching"])
def test_trajectory_equals_dense_recursion(algorithm, kwargs, topo):
    if algorithm == "DecentLaM" and not all(T.is_symmetric(topo.at(t).W) for t in range(3)):
        pytest.skip("DecentLaM refuses directed graphs (test_decentlam_refuses_directed_graphs)")
    problem = LeastSquares(N, seed=1)
    got, _ = run(problem, topo, algorithm, STEPS, **kwargs)
    want = dense_trajectory(problem, algorithm, topo, STEPS, LR, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert np.abs(want[:, -1] - want[:, 0]).max() > 0.1  # the run did move


def _fixed_point(problem, W, step):
    """Solve (I - W) X + step W grad F(X) = 0 for quadratic f_i (grad f_i = H_i x - A_i^T b_i)."""
    n, d = problem.n, problem.dim
    H = problem.hessians()
    c = np.einsum("nrd,nr->nd", problem.A, problem.b)
    blockH = np.zeros((n * d, n * d))
    for i in range(n):
        blockH[i * d:(i + 1) * d, i * d:(i + 1) * d] = H[i]
    K = np.kron(np.eye(n) - W, np.eye(d)) + step * np.kron(W, np.eye(d)) @ blockH
    rhs = step * np.kron(W, np.eye(d)) @ c.reshape(-1)
    return np.linalg.solve(K, rhs).reshape(n, d)


@pytest.mark.parametrize("algorithm, momentum, effective_step", [
    ("DSGD", 0.0, LR), ("DecentLaM", 0.0, LR), ("DecentLaM", 0.8, LR), ("DmSGD", 0.8, LR / (1 - 0.8)),
])
def test_fixed_points(algorithm, momentum, effective_step):
    problem, topo = LeastSquares(N, seed=2), T.ring(N)
    got, _ = run(problem, topo, algorithm, 1500, momentum=momentum)
    want = _fixed_point(problem, topo.W, effective_step)
    np.testing.assert_allclose(got[:, -1], want, atol=1e-8)
    assert np.abs(want - problem.minimiser()).max() > 1e-3  # a biased point, not the optimum


def test_decentlam_bias_does_not_grow_with_momentum_but_dmsgd_does():
    problem, topo = LeastSquares(N, seed=2), T.ring(N)
    opt_x = problem.minimiser()
    err = {a: np.abs(run(problem, topo, a, 1500, momentum=0.8)[0][:, -1] - opt_x).max() for a in ("DmSGD", "DecentLaM")}
    assert err["DmSGD"] > 2 * err["DecentLaM"]


def test_d2_reaches_the_exact_minimiser_on_heterogeneous_data():
    problem, topo = LeastSquares(N, seed=3), T.from_matrix(T.lazy(T.ring(N).W), name="lazy ring")
    got, _ = run(problem, topo, "D2", 2000)
    np.testing.assert_allclose(got[:, -1], np.broadcast_to(problem.minimiser(), (N, problem.dim)), atol=1e-8)
    dsgd, _ = run(problem, topo, "DSGD", 2000)
    assert np.abs(dsgd[:, -1] - problem.minimiser()).max() > 1e-3


@pytest.mark.parametrize("algorithm, kwargs", [("PmSGD", {}), ("LocalSGD", {"period": 1}),
                                               ("DmSGD", {"topology": T.complete(N)}),
                                               ("DecentLaM", {"topology": T.complete(N)})])
def test_centralized_equivalences_with_equal_initial_models(algorithm, kwargs):
    problem = LeastSquares(N, seed=4)
    problem.x0[:] = problem.x0[0]
    topo = kwargs.pop("topology", T.ring(N))
    got, _ = run(problem, topo, algorithm, 200, momentum=0.7, **kwargs)
    # centralized heavy ball on the average objective
    x, m, H = problem.x0[0].copy(), 0.0, problem.hessians().mean(0)
    c = np.einsum("nrd,nr->d", problem.A, problem.b) / N
    for _ in range(200):
        m = 0.7 * m + H @ x - c
        x = x - LR * m
    np.testing.assert_allclose(got[:, -1], np.broadcast_to(x, (N, problem.dim)), atol=1e-10)


@pytest.mark.parametrize("algorithm, kwargs", ALGORITHM_CASES, ids=lambda c: str(c))
def test_resume_from_state_dict_is_bit_identical(algorithm, kwargs):
    problem, topo = LeastSquares(N, seed=5), T.random_matching(N, seed=9)
    assert_resume_is_bit_identical(problem, algorithm, topo, 17, 23, lr=LR, **kwargs)


def test_decentlam_refuses_directed_graphs_and_defaults_to_a_symmetric_one():
    comm = Simulator(8).comms[0]
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(T.TopologyError, match="DecentLaM needs a symmetric mixing matrix and 'exponential' is not"):
        optim.DecentLaM(p, lr=0.1, momentum=0.9, topology=T.exponential(8), comm=comm)
    with pytest.raises(T.TopologyError, match="'one_peer_exponential' is not"):
        optim.DecentLaM(p, lr=0.1, topology=T.one_peer_exponential(8), comm=comm)
    names = Simulator(8).run(lambda c: [optim.by_name(a)([torch.zeros(3, requires_grad=True)], lr=0.1, comm=c)
                                        .topology.name for a in ("DecentLaM", "DmSGD")])
    assert names == [["symmetric_exponential", "exponential"]] * 8


def test_bad_arguments_are_refused():
    comm = Simulator(4).comms[0]
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match="invalid lr -1"):
        optim.DSGD(p, lr=-1, comm=comm)
    with pytest.raises(ValueError, match=r"momentum 1.0: must be in \[0, 1\)"):
        optim.DmSGD(p, lr=0.1, momentum=1.0, comm=comm)
    with pytest.raises(ValueError, match="unknown variant 'foo'"):
        optim.DmSGD(p, lr=0.1, variant="foo", comm=comm)
    with pytest.raises(ValueError, match="unknown algorithm 'adam'"):
        optim.by_name("adam")
    with pytest.raises(ValueError, match="D2 has no momentum"):
        optim.D2(p, lr=0.1, momentum=0.9, comm=comm)
    with pytest.raises(T.TopologyError, match="has 8 nodes but the job has 4 ranks"):
        optim.DSGD(p, lr=0.1, topology=T.ring(8), comm=comm)


def test_learning_rate_set_after_loading_a_state_reaches_the_update():
    def node(comm):
        p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = optim.DmSGD([p], lr=0.1, momentum=0.5, comm=comm)
        opt.load_state_dict(opt.state_dict())
        opt.param_groups[0]["lr"] = 1.0
        p.grad = torch.ones(2, dtype=torch.float64)
        opt.step()
        return p.detach().tolist()

    assert Simulator(2).run(node) == [[-1.0, -1.0]] * 2
