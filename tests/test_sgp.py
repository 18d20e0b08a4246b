"""Stochastic Gradient Push (issue 19) on the simulator: the dense push-sum recursion on directed
and time-varying graphs, the exact average where plain gossip drifts, resume, the
column-stochastic topologies and their checks."""

import networkx as nx
import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from beyond_oracles import sgp_trajectory
from oracles import LeastSquares, assert_resume_is_bit_identical, simulate

N, LR = 6, 0.05
CASES = [{}, {"momentum": 0.8}, {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1}]


def digraph(n):
    """A directed ring with node 0 also sending to every other node: out-degrees differ,
    so push weights are column- but not row-stochastic."""
    g = nx.DiGraph([(i, (i + 1) % n) for i in range(n)] + [(0, j) for j in range(2, n)])
    g.name = "ring+hub"
    return T.from_digraph(g)


TOPOLOGIES = {"digraph": digraph(N), "random_push": T.random_push(N, seed=4), "one_peer": T.one_peer_exponential(N)}


@pytest.mark.parametrize("kwargs", CASES, ids=str)
@pytest.mark.parametrize("name", TOPOLOGIES)
def test_trajectory_equals_dense_recursion(kwargs, name):
    problem, topo = LeastSquares(N, seed=1), TOPOLOGIES[name]
    got, _ = simulate(problem, topo, "SGP", 80, lr=LR, **kwargs)
    wd = kwargs.get("weight_decay", 0.0)
    want, _ = sgp_trajectory(problem, topo, 80, LR, kwargs.get("momentum", 0.0), kwargs.get("nesterov", False),
                             grads=lambda Z: problem.grads(Z) + wd * Z)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert np.abs(want[:, -1] - want[:, 0]).max() > 0.1


@pytest.mark.parametrize("name", ["digraph", "random_push"])
def test_debiased_average_is_exact_with_zero_gradients_where_plain_gossip_drifts(name):
    topo, steps = TOPOLOGIES[name], 80
    x0 = np.random.default_rng(0).standard_normal((N, 5))

    def node(comm):
        p = torch.tensor(x0[comm.rank], requires_grad=True)
        opt = optim.SGP([p], lr=0.1, momentum=0.9, topology=topo, comm=comm)
        out = []
        for _ in range(steps):
            p.grad = torch.zeros_like(p)
            opt.step()
            out.append((p.detach().numpy().copy(), opt.state[p]["push_weight"].item()))
        return out

    runs = Simulator(N).run(node)
    mean = x0.mean(axis=0)
    for t in range(steps):
        Z, w = np.stack([r[t][0] for r in runs]), np.array([r[t][1] for r in runs])
        np.testing.assert_allclose((w[:, None] * Z).sum(0) / N, mean, rtol=0, atol=1e-13, err_msg=f"step {t}")
        np.testing.assert_allclose(w.sum(), N, rtol=0, atol=1e-12)
    assert np.abs(Z - mean).max() < 1e-6  # every de-biased model reached the average
    # plain gossip on the same graph: X <- P X leaves node i at n pi_i mean; rows
    # normalised (each node averages what it receives) reach a consensus that is not the mean
    X, R = x0.copy(), x0.copy()
    for t in range(steps):
        P = topo.at(t).W
        X, R = P @ X, (P / P.sum(1, keepdims=True)) @ R
    assert np.abs(X - mean).max() > 0.1 and np.abs(R - mean).max() > 0.05


def test_on_a_doubly_stochastic_graph_the_weight_stays_one_and_sgp_is_dmsgd():
    problem, topo = LeastSquares(N, seed=2), T.ring(N)
    got, opts = simulate(problem, topo, "SGP", 60, lr=LR, momentum=0.8)
    want, _ = simulate(problem, topo, "DmSGD", 60, lr=LR, momentum=0.8)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.8, "nesterov": True}], ids=str)
def test_resume_from_state_dict_is_bit_identical(kwargs):
    assert_resume_is_bit_identical(LeastSquares(N, seed=5), "SGP", T.random_push(N, seed=9), 17, 23, lr=LR, **kwargs)


def test_column_stochastic_topologies_and_their_checks():
    topo = digraph(N)
    assert topo.stochastic == "column" and T.is_column_stochastic(topo.W) and not T.is_doubly_stochastic(topo.W)
    assert topo.out_neighbors(0) == list(range(1, N)) and topo.in_neighbors(3) == [0, 2]
    np.testing.assert_allclose(topo.W[:, 0], [1 / N] * N)  # node 0 splits its model over itself and 5 peers
    schedule = T.random_push(8, seed=1)
    for t in range(20):
        W = schedule.at(t).W
        assert T.is_column_stochastic(W) and np.count_nonzero(W - np.diag(np.diag(W)), axis=0).tolist() == [1] * 8
    assert not all(T.is_doubly_stochastic(schedule.at(t).W) for t in range(20))
    with pytest.raises(T.TopologyError, match="row 0 of W sums to .*stochastic='column' with a push-sum"):
        T.from_matrix(topo.W)
    with pytest.raises(T.TopologyError, match="column 0 of W sums to .*push_weights"):
        T.from_matrix(topo.W.T, stochastic="column")
    with pytest.raises(T.TopologyError, match="unknown stochastic='rows'"):
        T.from_matrix(np.eye(2), stochastic="rows")
    comm = Simulator(N).comms[0]
    for name in ("DSGD", "D2", "GT"):
        with pytest.raises(T.TopologyError, match=f"{name} needs a doubly stochastic topology"):
            optim.by_name(name)([torch.zeros(2, requires_grad=True)], lr=0.1, topology=topo, comm=comm)


# ------------------------------------------------------------------ OSGP: pushes received delay steps late

@pytest.mark.parametrize("delay", [1, 3])
@pytest.mark.parametrize("kwargs", CASES[::2], ids=str)
@pytest.mark.parametrize("name", TOPOLOGIES)
def test_osgp_trajectory_equals_delayed_dense_recursion(delay, kwargs, name):
    problem, topo = LeastSquares(N, seed=1), TOPOLOGIES[name]
    got, _ = simulate(problem, topo, "OSGP", 80, lr=LR, delay=delay, **kwargs)
    wd, beta, nesterov = kwargs.get("weight_decay", 0.0), kwargs.get("momentum", 0.0), kwargs.get("nesterov", False)
    grads = lambda Z: problem.grads(Z) + wd * Z  # noqa: E731
    want, _ = sgp_trajectory(problem, topo, 80, LR, beta, nesterov, grads=grads, delay=delay)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    undelayed, _ = sgp_trajectory(problem, topo, 80, LR, beta, nesterov, grads=grads)
    assert np.abs(want - undelayed).max() > 1e-2  # the delay changes the numbers


def test_osgp_average_with_the_mass_in_flight_is_exact_at_every_step():
    """Zero gradients on a directed time-varying graph: (sum X + in flight) / (sum w + in flight)
    is the initial average at every step (state_dict() shows what is in flight), and every
    de-biased model reaches it."""
    topo, steps, delay = TOPOLOGIES["random_push"], 80, 2
    x0 = np.random.default_rng(0).standard_normal((N, 5))

    def node(comm):
        p = torch.tensor(x0[comm.rank], requires_grad=True)
        opt = optim.OSGP([p], lr=0.1, momentum=0.9, topology=topo, comm=comm, delay=delay)
        out = []
        for t in range(steps):
            p.grad = torch.zeros_like(p)
            opt.step()
            saved = opt.state_dict()["state"][0]
            assert len(saved["in_flight"]) == min(t + 1, delay)
            out.append((p.detach().numpy().copy(), opt.state[p]["push_weight"].item(),
                        saved["in_flight"].sum(0).numpy(), saved["in_flight_weight"].sum().item()))
        return out

    runs = Simulator(N).run(node)
    mean = x0.mean(axis=0)
    for t in range(steps):
        Z, w = np.stack([r[t][0] for r in runs]), np.array([r[t][1] for r in runs])
        flying, flying_w = sum(r[t][2] for r in runs), sum(r[t][3] for r in runs)
        np.testing.assert_allclose(((w[:, None] * Z).sum(0) + flying) / (w.sum() + flying_w), mean,
                                   rtol=0, atol=1e-13, err_msg=f"step {t}")
        np.testing.assert_allclose(w.sum() + flying_w, N, rtol=0, atol=1e-12)
        if t < steps // 2:
            assert flying_w > 0.1  # real mass in flight, not a no-op
    assert np.abs(Z - mean).max() < 1e-5  # every de-biased model reached the average


def test_osgp_counts_one_gossip_round_a_step_as_sgp_does():
    """``last_gossip_rounds``: 0 before the first step, then 1 after every step (one push
    started, received ``delay`` steps later), as SGP's one round a step."""
    problem, topo = LeastSquares(N, seed=3), TOPOLOGIES["random_push"]

    def node(comm, algorithm, **options):
        params = [torch.tensor(problem.x0[comm.rank]).requires_grad_()]
        opt = optim.by_name(algorithm)(params, lr=LR, topology=topo, comm=comm, **options)
        rounds = [opt.last_gossip_rounds]
        for _ in range(4):
            params[0].grad = torch.ones_like(params[0])
            opt.step()
            rounds.append(opt.last_gossip_rounds)
        return rounds

    for algorithm, options in (("SGP", {}), ("OSGP", {"delay": 1}), ("OSGP", {"delay": 3})):
        assert Simulator(N).run(node, algorithm, **options) == [[0, 1, 1, 1, 1]] * N, (algorithm, options)


@pytest.mark.parametrize("kwargs", [{"delay": 1}, {"delay": 3, "momentum": 0.8, "nesterov": True}], ids=str)
def test_osgp_resume_from_state_dict_is_bit_identical(kwargs):
    """The pushes in flight at the checkpoint are saved and added at the steps they were due."""
    assert_resume_is_bit_identical(LeastSquares(N, seed=5), "OSGP", T.random_push(N, seed=9), 17, 23, lr=LR, **kwargs)


def test_osgp_checks_its_arguments():
    comm = Simulator(N).comms[0]
    p = torch.zeros(2, requires_grad=True)
    for delay in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"invalid delay {delay!r}: must be an integer >= 1 \(delay=0 is SGP\)"):
            optim.OSGP([p], lr=0.1, delay=delay, topology=TOPOLOGIES["digraph"], comm=comm)
    with pytest.raises(ValueError, match="delay must be the same in every parameter group"):
        optim.OSGP([{"params": [p]}, {"params": [torch.zeros(1, requires_grad=True)], "delay": 2}], lr=0.1,
                   topology=TOPOLOGIES["digraph"], comm=comm)
    for extra in ({"wire_dtype": "bfloat16"}, {"consensus_control": object()}):
        with pytest.raises(ValueError, match="OSGP does not gossip"):
            optim.OSGP([p], lr=0.1, topology=TOPOLOGIES["digraph"], comm=comm, **extra)
