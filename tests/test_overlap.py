"""Overlap: buckets launched from gradient hooks give exactly the same numbers as step() alone."""

import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from mpidec.optim.buckets import make_buckets
from oracles import ALGORITHM_CASES

N = 4


def mlp_worker(comm, algorithm, overlap, steps=6, **kwargs):
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 1)).double()
    init = torch.Generator().manual_seed(0)  # the same initial model everywhere (threads share torch's RNG)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=init, dtype=torch.float64) * 0.5)
    g = torch.Generator().manual_seed(comm.rank)  # ... but each worker its own data
    x, y = torch.randn(32, 5, generator=g, dtype=torch.float64), torch.randn(32, 1, generator=g, dtype=torch.float64)
    opt = optim.by_name(algorithm)(model.parameters(), lr=0.05, topology=T.ring(comm.size), comm=comm, overlap=overlap,
                                   bucket_bytes=100, **kwargs)
    launched_before_step = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        launched_before_step.append([b.launched for b in opt._buckets])
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy(), launched_before_step


@pytest.mark.parametrize("algorithm, kwargs", ALGORITHM_CASES, ids=lambda c: str(c))
def test_overlapped_buckets_equal_the_plain_step(algorithm, kwargs):
    plain = Simulator(N, T.ring(N)).run(mlp_worker, algorithm, False, **kwargs)
    overlapped = Simulator(N, T.ring(N)).run(mlp_worker, algorithm, True, **kwargs)
    for (a, launched_a), (b, launched_b) in zip(plain, overlapped):
        np.testing.assert_array_equal(a, b)
        assert not any(any(step) for step in launched_a)
        assert all(all(step) for step in launched_b)  # every bucket started during backward
    assert len(launched_b[0]) >= 3


def test_buckets_are_cut_last_parameters_first():
    params = [torch.zeros(n) for n in (10, 20, 30, 40)]  # 40, 80, 120, 160 bytes
    group = {}
    buckets = make_buckets([(p, group) for p in params], bucket_bytes=150)
    assert [[p.numel() for p, _ in b.pairs] for b in buckets] == [[40], [20, 30], [10]]


def test_accumulating_twice_before_step_is_refused_with_overlap():
    def node(comm):
        p = torch.ones(3, dtype=torch.float64, requires_grad=True)
        opt = optim.DSGD([p], lr=0.1, topology=T.ring(2), comm=comm)
        (p * 2).sum().backward()
        (p * 2).sum().backward()

    with pytest.raises(RuntimeError, match="accumulated twice before step"):
        Simulator(2, T.ring(2)).run(node)


def test_gradient_accumulation_works_without_overlap():
    def node(comm):
        p = torch.ones(3, dtype=torch.float64, requires_grad=True)
        opt = optim.DSGD([p], lr=0.1, topology=T.ring(2), comm=comm, overlap=False)
        (p * 2).sum().backward()
        (p * 2).sum().backward()
        opt.step()
        return p.detach().tolist()

    assert Simulator(2, T.ring(2)).run(node) == [[1 - 0.1 * 4] * 3] * 2
