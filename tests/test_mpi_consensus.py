"""Consensus distance on 4 real MPI ranks: spectral bounds, control, equality with the simulator."""

import math

import pytest
import torch

from mpidec import topology as T
from mpidec.consensus import ConsensusControl, estimate_from_residual, exact_distance
from mpidec.optim import DSGD
from oracles import random_models, xi

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.mark.parametrize("name", ["ring", "torus", "symmetric_exponential", "star", "complete"])
def test_estimate_within_spectral_bounds_under_mpi(comm, name):
    topo = T.build(name, comm.size)
    models = random_models(comm.size, seed=31)
    exact = exact_distance(models[comm.rank], comm)
    residual = comm.neighbor_average([t.clone() for t in models[comm.rank]], topology=topo, measure=True)
    estimate = estimate_from_residual(residual, comm)
    assert exact == pytest.approx(xi(models), rel=1e-12)
    assert (1 - T.lambda2(topo.W)) * exact - 1e-12 <= estimate <= (1 - T.lambda_min(topo.W)) * exact + 1e-12


def test_controlled_gossip_under_mpi(comm):
    topo = T.ring(comm.size)
    models = random_models(comm.size, seed=32)
    params = [t.clone().requires_grad_() for t in models[comm.rank]]
    probe = comm.neighbor_average([t.clone() for t in models[comm.rank]], topology=topo, measure=True)
    start = estimate_from_residual(probe, comm)
    opt = DSGD(params, lr=0.0, topology=topo, comm=comm, consensus_control=ConsensusControl(1e-6, reference=start))
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    rho, l2, lmin = T.contraction(topo.W), T.lambda2(topo.W), T.lambda_min(topo.W)
    assert 1 < opt.last_gossip_rounds <= 1 + math.ceil(math.log(1e-6 * (1 - l2) / (1 - lmin)) / math.log(rho))
    assert exact_distance(params, comm) <= 1e-6 * start / (1 - l2)
