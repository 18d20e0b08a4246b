"""Figures of a mixing matrix W (numpy / networkx): stochasticity, symmetry, connectivity,
eigenvalues, contraction and spectral gap. Pure functions of the matrix, and of one period
of a schedule (:func:`period_product`, :func:`summary`: anything with ``n``, ``period`` and
``at(step).W``); ``mpidec.topology`` uses them to check and describe topologies (and exports
them under its own name too)."""

from __future__ import annotations

import networkx as nx
import numpy as np


def is_doubly_stochastic(w, tol: float = 1e-8) -> bool:
    w = np.asarray(w)
    return bool((w >= -tol).all() and np.allclose(w.sum(0), 1, atol=tol) and np.allclose(w.sum(1), 1, atol=tol))


def is_column_stochastic(w, tol: float = 1e-8) -> bool:
    """Non-negative with columns summing to one: what push-sum needs."""
    w = np.asarray(w)
    return bool((w >= -tol).all() and np.allclose(w.sum(0), 1, atol=tol))


def is_symmetric(w, tol: float = 1e-12) -> bool:
    return bool(np.allclose(w, np.asarray(w).T, atol=tol))


def is_connected(w) -> bool:
    """Strongly connected as a directed graph (edge j -> i where ``W[i, j] > 0``)."""
    return nx.is_strongly_connected(nx.from_numpy_array((np.asarray(w) > 0).T, create_using=nx.DiGraph))


def eigenvalues(w) -> np.ndarray:
    """Eigenvalues of W sorted by real part, largest first."""
    ev = np.linalg.eigvals(np.asarray(w))
    return ev[np.argsort(-ev.real, kind="stable")]


def lambda2(w) -> float:
    """Second largest eigenvalue (real part); ``1 - lambda2`` is the gap of a symmetric W."""
    return float(eigenvalues(w)[1].real) if len(w) > 1 else 0.0


def lambda_min(w) -> float:
    """Smallest eigenvalue (real part); D2 needs it above -1/3."""
    return float(eigenvalues(w)[-1].real)


def contraction(w) -> float:
    """``rho = ||W - J||_2``: one gossip round shrinks the distance to the average by at least rho."""
    w = np.asarray(w)
    return float(np.linalg.norm(w - 1.0 / len(w), 2))


def spectral_gap(w) -> float:
    """``1 - ||W - J||_2``, positive for a connected doubly stochastic W with a self-loop."""
    return 1.0 - contraction(w)


def period_product(schedule, start: int = 0, steps: int | None = None) -> np.ndarray:
    """``W_{start+steps-1} ... W_{start}``: the mixing of one period of a schedule."""
    steps = steps or schedule.period or 1
    p = np.eye(schedule.n)
    for t in range(start, start + steps):
        p = schedule.at(t).W @ p
    return p


def summary(topo) -> dict:
    """Spectral figures of a topology, or of one period's product for a schedule (``lambda2``
    and ``lambda_min`` only for a static topology: one with a ``W``)."""
    w = topo.W if hasattr(topo, "W") else period_product(topo)
    out = {"name": topo.name, "n": topo.n, "period": topo.period,
           "doubly_stochastic": is_doubly_stochastic(w), "symmetric": is_symmetric(w),
           "connected": is_connected(w), "contraction": contraction(w), "spectral_gap": spectral_gap(w)}
    if hasattr(topo, "W"):
        out.update(lambda2=lambda2(w), lambda_min=lambda_min(w))
    return out
