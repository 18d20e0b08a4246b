"""The small training problem of benchmarks/consensus.py and benchmarks/compression.py.

A 64-32-10 MLP on scikit-learn's digits (no download), the training digits label-sorted
across the workers (each sees one or two classes), random batches, two learning-rate
phases; at the end, the test accuracy of the workers' average model and of each
worker's own.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits


def data(n, seed=0):
    """(one (X, y) shard per worker, label-sorted: heterogeneous; the (X, y) test set)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:360], order[360:]
    train = train[np.argsort(y[train], kind="stable")]          # label-sorted: heterogeneous
    shards = np.array_split(train, n)
    return [(torch.tensor(X[s]), torch.tensor(y[s])) for s in shards], (torch.tensor(X[test]), torch.tensor(y[test]))


def model(seed=0):
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


def model_bytes() -> int:
    return sum(p.numel() * 4 for p in model().parameters())


def accuracy(net, test):
    with torch.no_grad():
        return float((net(test[0]).argmax(1) == test[1]).float().mean())


def train(opt, net, shard, rank, lrs, steps, batch=32, after_step=None) -> None:
    """``steps`` steps of ``opt`` on random batches of ``shard`` (seeded by ``rank``): learning
    rate ``lrs[0]`` in the first half, ``lrs[1]`` in the second; ``after_step(step)`` after each."""
    X, y = shard
    g = torch.Generator().manual_seed(rank)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lrs[0] if step < steps // 2 else lrs[1]
        idx = torch.randint(0, len(y), (batch,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        opt.step()
        if after_step is not None:
            after_step(step)


def accuracies(net, test, comm) -> tuple[float, float]:
    """(test accuracy of the workers' average model, of this worker's own) (collective: an
    allreduce); ``net`` holds the average model afterwards."""
    own = accuracy(net, test)
    params = [p.detach().clone() for p in net.parameters()]
    comm.allreduce(params)
    with torch.no_grad():
        for p, mean in zip(net.parameters(), params):
            p.copy_(mean)
    return accuracy(net, test), own
