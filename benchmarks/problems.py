"""Small heterogeneous problems the benchmarks train on (numpy data, torch models)."""

from __future__ import annotations

import numpy as np
import torch


class HeterogeneousLogistic:
    """Node i holds its own logistic-regression data: features around a node-specific
    mean, labels from a node-specific separator. Global objective: the nodes' average,
    with L2 weight ``l2``."""

    def __init__(self, n: int, dim: int = 20, samples: int = 256, heterogeneity: float = 1.0,
                 l2: float = 1e-3, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n, self.dim, self.l2 = n, dim, l2
        w_star = rng.standard_normal(dim)
        self.X = rng.standard_normal((n, samples, dim)) + heterogeneity * rng.standard_normal((n, 1, dim))
        w_node = w_star + heterogeneity * rng.standard_normal((n, dim))
        self.y = np.sign(np.einsum("nsd,nd->ns", self.X, w_node) + 0.1 * rng.standard_normal((n, samples)))
        self.optimum_loss = self.global_loss(self._minimise())

    def global_loss(self, w: np.ndarray) -> float:
        margins = self.y * np.einsum("nsd,d->ns", self.X, w)
        return float(np.mean(np.logaddexp(0.0, -margins)) + 0.5 * self.l2 * w @ w)

    def _minimise(self, iters: int = 200) -> np.ndarray:
        """Newton's method on the global objective."""
        X, y = self.X.reshape(-1, self.dim), self.y.reshape(-1)
        w = np.zeros(self.dim)
        for _ in range(iters):
            p = 1 / (1 + np.exp(y * (X @ w)))
            grad = -(X * (y * p)[:, None]).mean(0) + self.l2 * w
            hess = (X * (p * (1 - p))[:, None]).T @ X / len(y) + self.l2 * np.eye(self.dim)
            w -= np.linalg.solve(hess, grad)
        return w

    def worker(self, comm, make_optimizer, steps: int, batch: int, seed: int = 0):
        """Train node ``comm.rank``'s model with minibatches of its own data; returns the
        model and the optimizer."""
        rank = comm.rank
        X, y = torch.tensor(self.X[rank]), torch.tensor(self.y[rank])
        w = torch.zeros(self.dim, dtype=torch.float64, requires_grad=True)
        opt = make_optimizer([w], comm)
        g = torch.Generator().manual_seed(seed * 100003 + rank)
        for _ in range(steps):
            idx = torch.randint(0, len(y), (batch,), generator=g)
            loss = torch.nn.functional.softplus(-y[idx] * (X[idx] @ w)).mean() + 0.5 * self.l2 * (w @ w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return w.detach().numpy().copy(), opt
