"""Consensus distance on the simulator: exact value, spectral bounds of the estimate, control."""

import math

import numpy as np
import pytest
import torch

from mpidec import topology as T
from mpidec.comm import Simulator
from mpidec.consensus import ConsensusControl, exact_distance, estimate_from_residual
from mpidec.optim import DSGD, PmSGD
from oracles import random_models, xi

SYMMETRIC = ["ring", "torus", "symmetric_exponential", "hypercube", "star", "complete"]


def measure(n, topo, models):
    def node(comm):
        exact = exact_distance(models[comm.rank], comm)
        residual = comm.neighbor_average([t.clone() for t in models[comm.rank]], topology=topo, measure=True)
        return exact, estimate_from_residual(residual, comm)

    return Simulator(n).run(node)


@pytest.mark.parametrize("name", SYMMETRIC)
def test_estimate_is_within_the_spectral_bounds(name):
    n = 8
    topo = T.build(name, n)
    models = random_models(n, seed=3)
    results = measure(n, topo, models)
    exact, estimate = results[0]
    assert all(r == results[0] for r in results)  # the same on every node
    assert exact == pytest.approx(xi(models), rel=1e-12)
    lo, hi = (1 - T.lambda2(topo.W)) * exact, (1 - T.lambda_min(topo.W)) * exact
    assert lo - 1e-12 <= estimate <= hi + 1e-12


def test_estimate_is_exact_on_the_complete_graph_and_zero_at_consensus():
    n = 6
    models = random_models(n, seed=4)
    exact, estimate = measure(n, T.complete(n), models)[0]
    assert estimate == pytest.approx(exact, rel=1e-12)
    same = [[t.clone() for t in models[0]] for _ in range(n)]
    assert measure(n, T.ring(n), same)[0] == pytest.approx((0.0, 0.0), abs=1e-14)


def _pure_gossip(n, topo, models, control, steps=1):
    """DSGD with lr = 0 and zero gradients: every step is gossip only."""

    def node(comm):
        params = [t.clone().requires_grad_() for t in models[comm.rank]]
        opt = DSGD(params, lr=0.0, topology=topo, comm=comm, consensus_control=control)
        rounds = []
        for _ in range(steps):
            for p in params:
                p.grad = torch.zeros_like(p)
            opt.step()
            rounds.append(opt.last_gossip_rounds)
        return rounds, [p.detach() for p in params], opt.consensus_estimate()

    return Simulator(n).run(node)


@pytest.mark.parametrize("factor", [0.5, 0.1, 0.01])
def test_control_meets_its_target_within_the_predicted_rounds(factor):
    n, topo = 8, T.ring(8)
    models = random_models(n, seed=5)
    start = measure(n, topo, models)[0][1]
    results = _pure_gossip(n, topo, models, ConsensusControl(factor, reference=start))
    rounds = results[0][0][0]
    rho, l2, lmin = T.contraction(topo.W), T.lambda2(topo.W), T.lambda_min(topo.W)
    predicted = 1 + math.ceil(math.log(factor * (1 - l2) / (1 - lmin)) / math.log(rho))
    assert 1 < rounds <= predicted
    # the last round's input met the target, so the output is closer still
    final = [m for _, m, _ in results]
    assert xi(final) <= factor * start / (1 - l2)


def test_target_zero_converges_to_exact_averaging():
    n, topo = 8, T.ring(8)
    models = random_models(n, seed=6)
    mean = [torch.stack([m[k] for m in models]).mean(0) for k in range(2)]
    results = _pure_gossip(n, topo, models, ConsensusControl(0.0, reference=1.0, max_rounds=400))
    assert results[0][0] == [400]
    for _, final, _ in results:
        for t, m in zip(final, mean):
            np.testing.assert_allclose(t.numpy(), m.numpy(), atol=1e-12)


def test_control_only_in_chosen_phases_and_gradient_target():
    n, topo = 4, T.ring(4)
    models = random_models(n, seed=7)
    phased = ConsensusControl(0.0, reference=1.0, max_rounds=5, active=lambda step: step < 2)
    assert _pure_gossip(n, topo, models, phased, steps=4)[0][0] == [5, 5, 1, 1]
    # gradient-EMA target with lr = 0 is 0: every step uses max_rounds
    assert _pure_gossip(n, topo, models, ConsensusControl(1.0, max_rounds=3), steps=2)[0][0] == [3, 3]


def test_control_is_refused_for_allreduce_algorithms():
    comm = Simulator(2).comms[0]
    with pytest.raises(ValueError, match="PmSGD does not gossip"):
        PmSGD([torch.zeros(2, requires_grad=True)], lr=0.1, comm=comm, consensus_control=ConsensusControl(0.5, 1.0))


@pytest.mark.parametrize("name, options", [("GT", {}), ("DmSGD", {"variant": "yu", "momentum": 0.9})])
def test_the_estimate_is_the_models_not_the_state_gossiped_with_them(name, options):
    """GT gossips its tracker and DmSGD ``yu`` its momentum along with the model; the estimate
    is the models' distance (lr = 0: the models are sent as they are, the state is the
    random gradients, which disagree much more)."""
    from mpidec.optim import by_name

    n, topo = 4, T.ring(4)
    models, grads = random_models(n, seed=8), random_models(n, seed=9)

    def node(comm):
        params = [t.clone().requires_grad_() for t in models[comm.rank]]
        opt = by_name(name)(params, lr=0.0, topology=topo, comm=comm, **options)
        for p, g in zip(params, grads[comm.rank]):
            p.grad = 10 * g
        opt.step()
        return opt.consensus_estimate()

    estimates = Simulator(n).run(node)
    assert estimates == [measure(n, topo, models)[0][1]] * n
