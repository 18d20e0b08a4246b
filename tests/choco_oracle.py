"""CHOCO-SGD in dense matrix form (rows = nodes), in numpy: the oracle of the CHOCO tests.

The compressors are written again here, in numpy, from their definitions (not from
mpidec.comm.compress), for the deterministic ones: identity, top-k and scaled sign. Each
acts per segment (a parameter tensor), as the optimizer compresses each parameter alone.
"""

import math

import numpy as np


def dense_compress(V, segments, compressor, ratio):
    """Row-wise ``Q`` of ``V`` (nodes x coordinates), segment by segment."""
    out, start = np.zeros_like(V), 0
    for size in segments:
        block = V[:, start:start + size]
        if compressor == "identity":
            q = block
        elif compressor == "top_k":
            k = max(1, min(size, math.ceil(ratio * size)))
            keep = np.argsort(-np.abs(block), axis=1, kind="stable")[:, :k]
            q = np.zeros_like(block)
            np.put_along_axis(q, keep, np.take_along_axis(block, keep, axis=1), axis=1)
        elif compressor == "sign":
            q = np.abs(block).mean(axis=1, keepdims=True) * np.where(block >= 0, 1.0, -1.0)
        else:
            raise ValueError(f"no dense oracle for {compressor!r}")
        out[:, start:start + size] = q
        start += size
    return out


class DenseChoco:
    """``X' = X - lr M``; ``Q = Q(X' - Xhat)``; ``Xhat += Q``; ``S += W Q``; ``X+ = X' + gamma (S - Xhat)``."""

    def __init__(self, n, dim, segments, compressor="identity", ratio=1.0, gamma=1.0):
        self.segments, self.compressor, self.ratio, self.gamma = segments, compressor, ratio, gamma
        self.M, self.Xhat, self.S = np.zeros((n, dim)), np.zeros((n, dim)), np.zeros((n, dim))

    def step(self, X, G, W, lr, beta):
        self.M = beta * self.M + G if beta else G
        Xh = X - lr * self.M
        Q = dense_compress(Xh - self.Xhat, self.segments, self.compressor, self.ratio)
        self.Xhat = self.Xhat + Q
        self.S = self.S + W @ Q
        return Xh + self.gamma * (self.S - self.Xhat)


def dense_choco_trajectory(problem, topology, steps, lr, momentum=0.0, segments=(4, 2), **options):
    """``DenseChoco`` on the problem's exact gradients (LeastSquares: parameters of 4 and 2); (nodes, steps, dim)."""
    rule = DenseChoco(problem.n, problem.dim, segments, **options)
    X, out = problem.x0.copy(), []
    for _ in range(steps):
        X = rule.step(X, problem.grads(X), topology.W, lr, momentum)
        out.append(X)
    return np.stack(out, axis=1)


def lazy_fixed_point(H, c, W, lr, gamma):
    """The fixed point of CHOCO (any compressor whose error vanishes at 0) on the separable
    quadratics f_i(x) = 0.5 sum_d H[i, d] (x_d - c[i, d])^2: that of DSGD on
    ``W_gamma = (1 - gamma) I + gamma W``, solving ``(I - W_g) X + lr W_g (H * (X - c)) = 0``
    coordinate by coordinate."""
    n, dim = H.shape
    Wg = (1 - gamma) * np.eye(n) + gamma * W
    X = np.zeros((n, dim))
    for d in range(dim):
        K = np.eye(n) - Wg + lr * Wg * H[:, d][None, :]
        X[:, d] = np.linalg.solve(K, lr * Wg @ (H[:, d] * c[:, d]))
    return X
