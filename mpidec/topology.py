"""Graphs and mixing matrices for gossip averaging (numpy / networkx, no MPI).

Convention: ``W[i, j]`` is the weight node ``i`` gives to node ``j``'s model, so one
gossip round is ``X <- W @ X`` with the models as rows. The non-zeros of row ``i``
(besides ``i`` itself) are node ``i``'s in-neighbours: the nodes it receives from.

Builders are small functions in the style of networkx's generators::

    ring(8)                      # static, weights 1/3
    exponential(16)              # static, directed, neighbours at distance 2^k
    one_peer_exponential(16)     # time-varying: at step t, i averages with i + 2^(t mod log2 n)
    random_matching(16, seed=0)  # time-varying, the same on every rank

A static :class:`Topology` and a time-varying :class:`Schedule` both answer
``at(step)`` with the static topology used at that step.

Push-sum (``stochastic="column"``): on a directed graph a node knows its out-degree, not
how many nodes send to it, so it splits its model among its out-neighbours and itself:
``P[i, j] = 1 / (out_degree(j) + 1)`` (:func:`push_weights`). Such a P only has columns
summing to one; only push-sum algorithms (:class:`mpidec.optim.SGP`) accept it::

    from_digraph(nx.DiGraph(...))  # static, column-stochastic
    random_push(16, seed=0)        # time-varying: at step t, i pushes half its model to a random peer
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from .spectral import (contraction, eigenvalues, is_column_stochastic, is_connected,  # noqa: F401 (API)
                       is_doubly_stochastic, is_symmetric, lambda2, lambda_min, period_product, spectral_gap,
                       summary)

_TOL = 1e-9


class TopologyError(ValueError):
    """A mixing matrix or graph that gossip averaging cannot use."""


# ---------------------------------------------------------------- weight rules


def uniform_weights(adjacency: np.ndarray) -> np.ndarray:
    """``W[i, j] = 1 / (in_degree(i) + 1)`` on the edges and the diagonal.

    Doubly stochastic only on regular graphs; use :func:`metropolis_hastings` otherwise.
    """
    a = _adjacency(adjacency)
    return (a + np.eye(len(a))) / (a.sum(axis=1, keepdims=True) + 1)


def metropolis_hastings(adjacency: np.ndarray) -> np.ndarray:
    """``W[i, j] = 1 / (1 + max(d_i, d_j))`` on edges, the rest on the diagonal.

    Symmetric and doubly stochastic for any undirected graph.
    """
    a = _adjacency(adjacency)
    if not np.array_equal(a, a.T):
        raise TopologyError("Metropolis-Hastings weights need an undirected graph")
    deg = a.sum(axis=1)
    w = a / (1.0 + np.maximum.outer(deg, deg))
    return w + np.diag(1.0 - w.sum(axis=1))


def push_weights(adjacency: np.ndarray) -> np.ndarray:
    """``P[i, j] = 1 / (out_degree(j) + 1)`` on the edges ``j -> i`` and the diagonal.

    Column-stochastic for any directed graph (``adjacency[i, j] != 0``: i receives from j);
    doubly stochastic only where every in-degree matches the out-degrees. For push-sum.
    """
    a = _adjacency(adjacency)
    return (a + np.eye(len(a))) / (a.sum(axis=0, keepdims=True) + 1)


def lazy(w: np.ndarray) -> np.ndarray:
    """``(I + W) / 2``: moves every eigenvalue into ``[0, 1]`` (needed by D2 on even rings)."""
    w = np.asarray(w, dtype=np.float64)
    return (np.eye(len(w)) + w) / 2


_WEIGHT_RULES = {"uniform": uniform_weights, "metropolis": metropolis_hastings}


def _adjacency(adjacency) -> np.ndarray:
    a = (np.asarray(adjacency) != 0).astype(np.float64)
    np.fill_diagonal(a, 0.0)
    return a


def _circulant(n: int, offsets) -> np.ndarray:
    """Adjacency with ``a[i, (i + d) % n] = 1`` for every offset ``d``."""
    a = np.zeros((n, n))
    for d in offsets:
        a[np.arange(n), (np.arange(n) + d) % n] = 1.0
    return a


# ---------------------------------------------------------------- topologies


def _as_matrix(w) -> np.ndarray:
    """``w`` as a float64 square matrix of finite numbers, or a TopologyError saying what is wrong."""
    try:
        w = np.array(w)
        if np.iscomplexobj(w):
            raise TopologyError("W has complex entries; weights must be real numbers")
        w = w.astype(np.float64)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, TopologyError):
            raise
        raise TopologyError(f"W must be a square matrix of numbers: {exc}") from exc
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] == 0:
        raise TopologyError(f"W must be a non-empty square matrix, got shape {w.shape}")
    if not np.isfinite(w).all():
        i, j = np.argwhere(~np.isfinite(w))[0]
        raise TopologyError(f"W[{i},{j}] is {w[i, j]}; every weight must be a finite number")
    return w


STOCHASTIC = ("doubly", "column")  # what a Topology checks: rows and columns, or columns only


def _check_stochastic(stochastic: str) -> str:
    if stochastic not in STOCHASTIC:
        raise TopologyError(f"unknown stochastic={stochastic!r}; use 'doubly' (gossip) or 'column' (push-sum)")
    return stochastic


def _check_sums(w: np.ndarray, stochastic: str) -> None:
    """Columns (and, unless push-sum, rows) of ``w`` sum to one, or a TopologyError naming the first that does not."""
    for axis, what in ((1, "row"), (0, "column"))[stochastic == "column":]:
        sums = w.sum(axis=axis)
        bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-8)
        if bad.size:
            hint = ("push-sum needs a column-stochastic W (try push_weights(adjacency))" if stochastic == "column"
                    else "gossip needs a doubly stochastic W (try metropolis_hastings(adjacency) for irregular "
                         "graphs, or stochastic='column' with a push-sum algorithm for directed ones)")
            raise TopologyError(f"{what} {bad[0]} of W sums to {sums[bad[0]]:.6g}, not 1; {hint}")


def check_nodes(n) -> int:
    """``n`` as a number of nodes: a whole number >= 1 (TopologyError otherwise)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise TopologyError(f"the number of nodes must be a whole number >= 1, got n={n!r}")
    return int(n)


class _OverNodes:
    """What static and time-varying topologies share."""

    n: int
    name: str

    def check_size(self, world_size: int) -> None:
        if self.n != world_size:
            raise TopologyError(
                f"topology {self.name!r} has {self.n} nodes but the job has {world_size} ranks; "
                f"build it with n={world_size} or launch {self.n} ranks")


class Topology(_OverNodes):
    """A static mixing matrix ``W`` over ``n`` nodes.

    Checked at construction: square, non-negative, rows and columns summing to one
    (only columns with ``stochastic="column"``, for push-sum), and (unless
    ``connected=False``, used for the steps of a schedule) strongly connected.
    """

    period = 1

    def __init__(self, w, name: str = "custom", connected: bool = True, stochastic: str = "doubly"):
        w = _as_matrix(w)
        if (w < -_TOL).any():
            i, j = np.argwhere(w < -_TOL)[0]
            raise TopologyError(f"W has a negative weight W[{i},{j}] = {w[i, j]:g}; weights must be >= 0")
        _check_sums(w, _check_stochastic(stochastic))
        self.W = w
        self.n = len(w)
        self.name = name
        self.stochastic = stochastic
        if connected and not is_connected(w):
            raise TopologyError(f"topology {name!r} is not connected: gossip cannot reach consensus")
        self._in = [np.flatnonzero(w[i] > 0) for i in range(self.n)]
        self._out = [np.flatnonzero(w[:, i] > 0) for i in range(self.n)]

    def at(self, step: int) -> "Topology":
        """The static topology used at ``step``: a static topology is itself."""
        return self

    def in_neighbors(self, i: int) -> list[int]:
        """Nodes whose models node ``i`` receives (``W[i, j] > 0``, ``j != i``), ascending."""
        return [int(j) for j in self._in[i] if j != i]

    def out_neighbors(self, i: int) -> list[int]:
        """Nodes that receive node ``i``'s model (``W[k, i] > 0``, ``k != i``), ascending."""
        return [int(k) for k in self._out[i] if k != i]

    def edges(self) -> frozenset:
        """``{(j, i)}``: j's model flows to i. Two topologies with equal edges share a communicator."""
        return frozenset((int(j), i) for i in range(self.n) for j in self.in_neighbors(i))

    def __repr__(self):
        return f"Topology({self.name!r}, n={self.n})"


class Schedule(_OverNodes):
    """A time-varying topology: ``at(step)`` computes the static topology of that step.

    ``period`` is the length after which the sequence repeats (``None`` if it never does).
    Every rank computes the same sequence from the same arguments, with no communication.
    """

    def __init__(self, n: int, step_fn, name: str, period: int | None, stochastic: str = "doubly"):
        self.n, self.name, self.period = n, name, period
        self.stochastic = _check_stochastic(stochastic)
        self._step_fn = step_fn
        self._cache: dict[int, Topology] = {}

    def at(self, step: int) -> Topology:
        key = step % self.period if self.period else step
        topo = self._cache.get(key)
        if topo is None:
            topo = Topology(self._step_fn(key), name=f"{self.name}@{key}", connected=False, stochastic=self.stochastic)
            if self.period:  # aperiodic schedules would grow the cache without bound
                self._cache[key] = topo
        return topo

    def __repr__(self):
        return f"Schedule({self.name!r}, n={self.n}, period={self.period})"


# ---------------------------------------------------------------- builders


def ring(n: int) -> Topology:
    """Each node averages with its two ring neighbours, weights 1/3 (1/2 for n = 2)."""
    n = check_nodes(n)
    return Topology(uniform_weights(_circulant(n, {1 % n, -1 % n} - {0})), name="ring")


def torus(n: int, shape: tuple[int, int] | None = None) -> Topology:
    """2-D periodic grid, rows x cols = n; default shape is the most square factorisation."""
    n = check_nodes(n)
    if shape is None:
        rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
        shape = (rows, n // rows)
    rows, cols = shape
    if rows < 1 or cols < 1 or rows * cols != n:
        raise TopologyError(f"torus shape {rows}x{cols} does not fit n={n}: rows*cols must equal n")
    a = np.zeros((n, n))
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                a[r * cols + c, ((r + dr) % rows) * cols + (c + dc) % cols] = 1.0
    return Topology(uniform_weights(a), name=f"torus{rows}x{cols}")


def _powers_of_two(n: int) -> list[int]:
    """1, 2, 4, ... below n."""
    return [2**k for k in range(max(1, math.ceil(math.log2(n))))] if n > 1 else []


def exponential(n: int) -> Topology:
    """Static exponential graph (directed): node i receives from i + 2^k, weights 1/(tau+1)."""
    n = check_nodes(n)
    return Topology(uniform_weights(_circulant(n, _powers_of_two(n))), name="exponential")


def symmetric_exponential(n: int) -> Topology:
    """Undirected exponential graph: neighbours at i +- 2^k, uniform weights."""
    n = check_nodes(n)
    offsets = {d % n for p in _powers_of_two(n) for d in (p, -p)} - {0}
    return Topology(uniform_weights(_circulant(n, offsets)), name="symmetric_exponential")


def hypercube(n: int) -> Topology:
    """Neighbours differ in one bit; n must be a power of two."""
    n = check_nodes(n)
    if n < 1 or n & (n - 1):
        raise TopologyError(f"hypercube needs n a power of two, got n={n}")
    a = np.zeros((n, n))
    for p in _powers_of_two(n):
        a[np.arange(n), np.arange(n) ^ p] = 1.0
    return Topology(uniform_weights(a), name="hypercube")


def complete(n: int) -> Topology:
    """Exact averaging every step: ``W = 11^T / n``."""
    n = check_nodes(n)
    return Topology(np.full((n, n), 1.0 / n), name="complete")


def star(n: int) -> Topology:
    """Node 0 is the hub; Metropolis-Hastings weights (the graph is irregular)."""
    n = check_nodes(n)
    a = np.zeros((n, n))
    a[0, 1:] = a[1:, 0] = 1.0
    return Topology(metropolis_hastings(a), name="star")


def from_networkx(graph: nx.Graph, weights: str = "metropolis") -> Topology:
    """Nodes in sorted order become ranks 0..n-1; ``weights`` is 'metropolis' or 'uniform'."""
    if weights not in _WEIGHT_RULES:
        raise TopologyError(f"unknown weight rule {weights!r}; use one of {sorted(_WEIGHT_RULES)}")
    adjacency = nx.to_numpy_array(graph, nodelist=sorted(graph.nodes))
    return Topology(_WEIGHT_RULES[weights](adjacency), name=f"networkx:{graph.name or 'graph'}")


def from_matrix(w, name: str = "custom", stochastic: str = "doubly") -> Topology:
    """A user-given mixing matrix, checked as every topology is (``stochastic="column"``: push-sum)."""
    return Topology(w, name=name, stochastic=stochastic)


def from_digraph(graph: nx.DiGraph) -> Topology:
    """A directed graph for push-sum: an edge ``u -> v`` means u sends to v; nodes in sorted
    order become ranks 0..n-1; :func:`push_weights`, column-stochastic."""
    adjacency = nx.to_numpy_array(graph, nodelist=sorted(graph.nodes)).T  # row i: what i receives
    return Topology(push_weights(adjacency), name=f"digraph:{graph.name or 'graph'}", stochastic="column")


def one_peer_exponential(n: int) -> Schedule:
    """At step t node i averages with node i + 2^(t mod tau), tau = ceil(log2 n), weights 1/2.

    For n a power of two the product over one period is exact averaging.
    """
    n = check_nodes(n)
    offsets = _powers_of_two(n) or [0]

    def step(t):
        w = np.eye(n) / 2
        w[np.arange(n), (np.arange(n) + offsets[t]) % n] += 0.5
        return w

    return Schedule(n, step, "one_peer_exponential", period=len(offsets))


def random_matching(n: int, seed: int = 0) -> Schedule:
    """At each step a random perfect matching (one node idle when n is odd), weights 1/2.

    The matching of step t depends only on (seed, t), so all ranks agree without talking.
    """
    n = check_nodes(n)

    def step(t):
        order = np.random.default_rng([seed, t]).permutation(n)
        w = np.eye(n)
        for a, b in zip(order[0::2], order[1::2]):
            w[[a, a, b, b], [a, b, a, b]] = 0.5
        return w

    return Schedule(n, step, f"random_matching(seed={seed})", period=None)


def random_push(n: int, seed: int = 0) -> Schedule:
    """Push-sum (column-stochastic): at step t every node keeps half its model and pushes the
    other half to one peer drawn at random (depending only on (seed, t)). A node may receive
    from several peers or none, so rows do not sum to one: only push-sum algorithms take it."""
    n = check_nodes(n)

    def step(t):
        rng = np.random.default_rng([seed, t])
        peers = (np.arange(n) + rng.integers(1, max(n, 2), size=n)) % n
        w = np.eye(n) / 2
        np.add.at(w, (peers, np.arange(n)), 0.5)
        return w

    return Schedule(n, step, f"random_push(seed={seed})", period=None, stochastic="column")


BUILDERS = {
    "ring": ring, "torus": torus, "exponential": exponential,
    "symmetric_exponential": symmetric_exponential, "hypercube": hypercube,
    "complete": complete, "star": star, "one_peer_exponential": one_peer_exponential,
    "random_matching": random_matching,
}


def build(name: str, n: int) -> Topology | Schedule:
    """A topology by name (as on the command line)."""
    if name not in BUILDERS:
        raise TopologyError(f"unknown topology {name!r}; choose one of {', '.join(BUILDERS)}")
    return BUILDERS[name](check_nodes(n))
