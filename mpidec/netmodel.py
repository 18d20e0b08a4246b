"""A clock for decentralized training: the predicted time of a step on a network of hosts.

Workers are ranks placed in blocks on hosts (``per_host`` ranks each, as ``mpiexec
--map-by slot`` and ``srun`` place them). Each host has one link to a switch, full duplex,
shared by its ranks; a message between hosts costs (alpha-beta, with sharing)::

    overhead * max(messages its sender sends, its receiver receives)    (per-message CPU)
  + latency                                                             (alpha)
  + max(load on the sender's uplink, load on the receiver's downlink) / bandwidth   (beta)

where a link's load is every byte that crosses it in the same round: the messages of a
round start together and share the links fairly, so a message is done when the busier of
its two links has drained. Within a host, ``local_latency + bytes / local_bandwidth``.

Each exchange mpidec does is costed by the algorithm that does it:

- a gossip round (``Ineighbor_allgather`` over ``topology.at(step)``): one round in which
  every in-neighbour sends its model; node i waits for its *slowest in-neighbour*, and the
  node clocks ``T_i <- max(T_i + c_i, max_j T_j + c_j + m_ji)`` carry a slow node's delay
  to its neighbours step by step (c_i: node i's compute time, m_ji: the message's time);
- an allreduce (PmSGD; LocalSGD every ``period`` steps with model and momentum): ring
  (2(n-1) rounds of S/n), recursive doubling (log2 n rounds of S) or Rabenseifner
  (halving then doubling); ``auto`` takes the cheapest, as MPI libraries choose by size;
- the majority vote (SignumMV): an all-to-all of 1-bit shards, then an allgather;
- AD-PSGD: asynchronous events: each worker computes, an active worker locks itself and a
  random passive neighbour (waiting while either is locked), reads and writes the model
  (``4 rma_latency + 2 S / bandwidth``, sharing the busier of the two host links with the
  averages crossing it), unlocks; nobody waits for anyone else. (mpidec's loop also draws
  a sample ticket from a passive worker every step, while the step computes: not here.)

Compute is an input (measured, or what a user knows of their model); communication is not
overlapped with it (mpidec's gradient-hook overlap can hide part of it: the model is an
upper bound there). No MPI and no torch here: numpy and :mod:`mpidec.topology`.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field, replace

import numpy as np

from . import topology as T

GBIT = 1e9 / 8  # bytes per second in one Gbit/s
# AD-PSGD's mean step is that of a random process (which neighbour, who waits for a lock):
# with 4 workers, 200 events gave 208-318 ms over 5 seeds where 20,000 give 245-256 ms
ADPSGD_EVENTS = 20_000

# What each algorithm sends per step (docs/algorithms.md's table): gossip of k models, an
# allreduce of k models every `period` steps, the 1-bit majority vote, or one-sided pairs.
EXCHANGES = {"DSGD": ("gossip", 1), "DmSGD": ("gossip", 1), "DecentLaM": ("gossip", 1), "QGDmSGD": ("gossip", 1),
             "D2": ("gossip", 1), "PmSGD": ("allreduce", 1), "LocalSGD": ("allreduce", 2),
             "SignumMV": ("vote", 1), "ADPSGD": ("pairwise", 1)}


@dataclass(frozen=True)
class Network:
    """Hosts, their ranks and their links. Seconds, bytes, bytes per second.

    ``slow``: ``((host, factor), ...)``: that host's link is ``factor`` times slower.
    ``rma_latency``: one one-sided round trip (lock word, get) across hosts; default
    ``2 latency``.
    """

    hosts: int
    per_host: int = 1
    bandwidth: float = 25 * GBIT
    latency: float = 20e-6
    overhead: float = 2e-6
    local_bandwidth: float = 20e9
    local_latency: float = 1e-6
    rma_latency: float | None = None
    slow: tuple = field(default_factory=tuple)

    def __post_init__(self):
        if self.hosts < 1 or self.per_host < 1:
            raise ValueError(f"need at least one host and one rank per host, got {self.hosts} x {self.per_host}")
        if not (self.bandwidth > 0 and self.local_bandwidth > 0):
            raise ValueError("bandwidths must be > 0")
        for host, factor in self.slow:
            if not (0 <= host < self.hosts and factor >= 1):
                raise ValueError(f"slow link ({host}, {factor}): host must be in 0..{self.hosts - 1}, factor >= 1")

    @property
    def n(self) -> int:
        return self.hosts * self.per_host

    def host_of(self, ranks) -> np.ndarray:
        return np.asarray(ranks) // self.per_host

    def link_bandwidths(self) -> np.ndarray:
        bw = np.full(self.hosts, float(self.bandwidth))
        for host, factor in self.slow:
            bw[host] /= factor
        return bw

    @property
    def rma(self) -> float:
        return 2 * self.latency if self.rma_latency is None else self.rma_latency


# ---------------------------------------------------------------- one round of messages

def message_times(net: Network, src, dst, nbytes) -> np.ndarray:
    """When each message of one round is done, all starting at time 0 (see the module doc)."""
    src, dst = np.asarray(src, dtype=int), np.asarray(dst, dtype=int)
    nbytes = np.broadcast_to(np.asarray(nbytes, dtype=float), src.shape)
    hs, hd = net.host_of(src), net.host_of(dst)
    cross = hs != hd
    bw = net.link_bandwidths()
    up = np.bincount(hs[cross], weights=nbytes[cross], minlength=net.hosts) / bw
    down = np.bincount(hd[cross], weights=nbytes[cross], minlength=net.hosts) / bw
    busy = np.maximum(np.bincount(src, minlength=net.n)[src], np.bincount(dst, minlength=net.n)[dst])
    remote = net.latency + np.maximum(up[hs], down[hd])
    local = net.local_latency + nbytes / net.local_bandwidth
    return net.overhead * busy + np.where(cross, remote, local)


def round_time(net: Network, src, dst, nbytes) -> float:
    times = message_times(net, src, dst, nbytes)
    return float(times.max()) if times.size else 0.0


def gossip_round_time(net: Network, topo, nbytes: float) -> float:
    """One gossip round over the graph ``topo`` (one step's W), every node sending at once."""
    return round_time(net, *_edges(topo), nbytes)


def average_time(net: Network, i: int, j: int, nbytes: float, crossing=(0, 0)) -> float:
    """One AD-PSGD average of workers i and j: lock both, read and write the model.
    ``crossing``: how many other averages cross i's host link and j's meanwhile; this one
    shares the busier of the two with them."""
    a, b = net.host_of([i, j])
    if a == b:
        return 4 * net.local_latency + 2 * nbytes / net.local_bandwidth
    bw = net.link_bandwidths()
    return 4 * net.rma + 2 * nbytes * (1 + max(crossing)) / min(bw[a], bw[b])


def concurrent_averages_time(net: Network, pairs, nbytes: float) -> float:
    """The longest of AD-PSGD averages ``pairs`` ((i, j), ...) that start together."""
    hosts = [tuple(net.host_of(pair)) for pair in pairs]
    on = np.bincount([h for a, b in hosts if a != b for h in (a, b)], minlength=net.hosts)
    return max(average_time(net, i, j, nbytes, crossing=(on[a] - (a != b), on[b] - (a != b)))
               for (i, j), (a, b) in zip(pairs, hosts))


# ---------------------------------------------------------------- collectives

def _pairs(n: int, partner: np.ndarray):
    ranks = np.arange(n)
    keep = partner < n
    return ranks[keep], partner[keep]


def allreduce_time(net: Network, nbytes: float, algorithm: str = "auto") -> float:
    """An in-place sum of ``nbytes`` over all ranks: 'ring', 'recursive_doubling',
    'rabenseifner' (powers of two), 'binomial' (reduce up a binomial tree, broadcast down:
    Open MPI 4.1's non-blocking ``MPI_Iallreduce`` in place, mpidec's MPI fallback when
    Horovod is absent) or 'auto' (the cheapest of the first three, as a tuned library picks)."""
    n = net.n
    if n == 1:
        return 0.0
    ranks, steps = np.arange(n), math.ceil(math.log2(n))
    if algorithm == "binomial":
        tree = [(ranks[ranks % (2 << k) == 1 << k], ranks[ranks % (2 << k) == 1 << k] - (1 << k)) for k in range(steps)]
        return 2 * sum(round_time(net, src, dst, nbytes) for src, dst in tree)
    costs = {"ring": 2 * (n - 1) * round_time(net, ranks, (ranks + 1) % n, nbytes / n),
             "recursive_doubling": sum(round_time(net, *_pairs(n, ranks ^ (1 << k)), nbytes) for k in range(steps))}
    if n & (n - 1) == 0:  # reduce-scatter by halving, allgather by doubling
        costs["rabenseifner"] = 2 * sum(round_time(net, ranks, ranks ^ (n >> (k + 1)), nbytes / 2 ** (k + 1))
                                        for k in range(steps))
    if algorithm == "auto":
        return min(costs.values())
    if algorithm not in costs:
        raise ValueError(f"allreduce algorithm {algorithm!r} is not one of {sorted(costs)} for {n} ranks")
    return costs[algorithm]


def allgather_time(net: Network, nbytes_each: float) -> float:
    """Every rank gets every rank's ``nbytes_each``: the cheaper of ring and recursive doubling."""
    n = net.n
    if n == 1:
        return 0.0
    ranks = np.arange(n)
    ring = (n - 1) * round_time(net, ranks, (ranks + 1) % n, nbytes_each)
    doubling = sum(round_time(net, *_pairs(n, ranks ^ (1 << k)), nbytes_each * 2 ** k)
                   for k in range(math.ceil(math.log2(n))))
    return min(ring, doubling)


def alltoall_time(net: Network, nbytes_each: float) -> float:
    """Every rank sends ``nbytes_each`` to every other: the cheaper of all messages in one
    round and pairwise exchange (n - 1 rounds, rank i to i + k)."""
    n = net.n
    if n == 1:
        return 0.0
    ranks = np.arange(n)
    pairwise = sum(round_time(net, ranks, (ranks + k) % n, nbytes_each) for k in range(1, n))
    if n > 256:  # n^2 messages in one round: pairwise is what MPI libraries do at this size
        return pairwise
    src, dst = np.divmod(np.arange(n * n), n)
    keep = src != dst
    return min(pairwise, round_time(net, src[keep], dst[keep], nbytes_each))


def vote_time(net: Network, numel: int) -> float:
    """SignumMV's majority vote of ``numel`` signs: all-to-all of shards, allgather of votes."""
    shard = math.ceil(numel / net.n / 8)  # bytes per rank's shard of packed bits
    return alltoall_time(net, shard) + allgather_time(net, shard)


# ---------------------------------------------------------------- step clocks

@dataclass(frozen=True)
class StepCost:
    """Predicted mean seconds per step, of which ``compute`` is the mean compute time."""

    step: float
    compute: float

    @property
    def communication(self) -> float:
        return max(self.step - self.compute, 0.0)

    @property
    def share(self) -> float:
        """The fraction of a step spent communicating (or waiting for others)."""
        return self.communication / self.step if self.step > 0 else 0.0


def step_cost(net: Network, algorithm: str, nbytes: float, compute, topology=None, period: int = 4,
              steps: int | None = None, seed: int = 0, allreduce: str = "auto") -> StepCost:
    """Mean seconds per step of ``algorithm`` (a name in :data:`EXCHANGES`) with a model of
    ``nbytes`` (float32) and ``compute`` seconds per step (a number, or one per rank: a
    straggler). ``topology``: a name or object (gossip and AD-PSGD; default: ring for
    AD-PSGD, exponential otherwise); ``period``: LocalSGD's; ``allreduce``: the algorithm
    of :func:`allreduce_time`."""
    if algorithm not in EXCHANGES:
        raise ValueError(f"unknown algorithm {algorithm!r}; the model knows {', '.join(EXCHANGES)}")
    c = np.broadcast_to(np.asarray(compute, dtype=float), (net.n,)).copy()
    kind, models = EXCHANGES[algorithm]
    if kind in ("gossip", "pairwise"):
        topo = topology if topology is not None else ("ring" if kind == "pairwise" else "exponential")
        topo = T.build(topo, net.n) if isinstance(topo, str) else topo
        if kind == "pairwise":
            return _adpsgd_clock(net, topo, nbytes, c, steps or max(50 * net.n, ADPSGD_EVENTS), seed)
        return _gossip_clock(net, topo, models * nbytes, c, steps or 2 * max(topo.period or 1, 8))
    if kind == "vote":
        return _synchronous(c, vote_time(net, int(nbytes // 4)), every=1)
    every = period if algorithm == "LocalSGD" else 1
    return _synchronous(c, allreduce_time(net, models * nbytes, allreduce), every=every)


def _synchronous(c: np.ndarray, collective: float, every: int) -> StepCost:
    """Ranks compute freely for ``every`` steps, then meet in a collective of that duration."""
    return StepCost(step=(float((every * c).max()) + collective) / every, compute=float(c.mean()))


def _edges(topo) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) of every message of one gossip round: W[i, j] > 0, j != i, sends j -> i."""
    w = topo.W
    dst, src = np.nonzero((w > 0) & ~np.eye(len(w), dtype=bool))
    return src, dst


def _gossip_clock(net: Network, schedule, nbytes: float, c: np.ndarray, steps: int) -> StepCost:
    """Node clocks over ``steps`` steps; the mean step is the slope over the second half."""
    clock, half = np.zeros(net.n), None
    rounds = {}
    for t in range(steps):
        key = t % schedule.period if schedule.period else t
        if key not in rounds:
            src, dst = _edges(schedule.at(t))
            rounds[key] = (src, dst, message_times(net, src, dst, nbytes))
        src, dst, m = rounds[key]
        ready = clock + c
        clock = ready.copy()
        np.maximum.at(clock, dst, ready[src] + m)
        if t == steps // 2 - 1:
            half = clock.copy()
    return StepCost(step=float((clock - half).mean() / (steps - steps // 2)), compute=float(c.mean()))


def bipartite_colours(topo) -> np.ndarray:
    """AD-PSGD's roles: True for the active side of the 2-colouring (rank 0's side)."""
    import networkx as nx

    graph = nx.Graph(list(topo.edges()))
    graph.add_nodes_from(range(topo.n))
    if not nx.is_bipartite(graph):
        raise T.TopologyError(f"AD-PSGD needs a bipartite topology; {topo.name!r} with n={topo.n} is not")
    colour = nx.bipartite.color(graph)
    return np.array([colour[i] == colour[0] for i in range(topo.n)])


def _adpsgd_clock(net: Network, topo, nbytes: float, c: np.ndarray, steps: int, seed: int) -> StepCost:
    """Event simulation until the workers made ``steps`` steps together; the mean step is
    ``n * elapsed / steps`` (the synchronous step that processes as many samples)."""
    active = bipartite_colours(topo)
    neighbours = [sorted(set(topo.in_neighbors(i)) | set(topo.out_neighbors(i))) for i in range(net.n)]
    hosts = net.host_of(np.arange(net.n))
    free = np.zeros(net.n)             # when each worker's model lock is next free
    transfers = [[] for _ in range(net.hosts)]  # end times of averages crossing each host's link
    rng = random.Random(seed)
    events = [(float(c[i]), i) for i in range(net.n)]
    heapq.heapify(events)
    now = 0.0
    for _ in range(steps):
        now, i = heapq.heappop(events)
        if active[i]:
            j = rng.choice(neighbours[i])
            start = max(now, free[i], free[j])
            a, b = hosts[i], hosts[j]
            took = average_time(net, i, j, nbytes, crossing=(sum(end > start for end in transfers[a]),
                                                              sum(end > start for end in transfers[b])))
            if a != b:
                transfers[a] = [e for e in transfers[a] if e > start] + [start + took]
                transfers[b] = [e for e in transfers[b] if e > start] + [start + took]
            free[i] = free[j] = done = start + took
        else:
            done = free[i] = max(now, free[i])
        heapq.heappush(events, (done + c[i], i))
    return StepCost(step=net.n * now / steps, compute=float(c.mean()))


# ---------------------------------------------------------------- calibration

def fit_link(nbytes, seconds) -> tuple[float, float]:
    """Least-squares ``seconds = latency + nbytes / bandwidth``; returns (latency, bandwidth)."""
    x, y = np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    if slope <= 0:
        raise ValueError("the times do not grow with the message size: cannot fit a bandwidth")
    return max(float(intercept), 0.0), float(1.0 / slope)


def with_hosts(net: Network, hosts: int, per_host: int) -> Network:
    """The same links with another number of hosts and ranks per host."""
    return replace(net, hosts=hosts, per_host=per_host, slow=tuple(s for s in net.slow if s[0] < hosts))
