"""Asynchronous decentralized parallel SGD (AD-PSGD) on one-sided model windows."""

from __future__ import annotations

import math
import random

import torch

from ..bipartite import bipartite_roles
from .base import DecentralizedOptimizer
from .buckets import by_group


class ADPSGD(DecentralizedOptimizer):
    r"""AD-PSGD (Lian, Zhang, Zhang & Liu 2018), with the paper's active/passive split.

    Every worker steps at its own pace; nothing waits for the slowest worker. Worker ``i``::

        g   = grad f_i(x_hat) + weight_decay * x_hat     x_hat: the model read at the end of the last step
        d   = beta m + g ;  m <- d                        (local momentum, as torch.optim.SGD; beta = 0: d = g)
        active i:   j = random neighbour (passive);   x_i, x_j <- (x_i + x_j) / 2    (atomic)
        x_i <- x_i - lr d                                (atomic with respect to the averages)
        x_hat <- x_i                                     (the parameters for the next forward)

    The model ``x_i`` lives in a one-sided window (``comm.model_window``). An active worker
    averages with a passive neighbour by locking both models (in rank order), reading the
    passive one and writing the average back (MPI: Lock, Get, Put, Unlock); a passive worker
    never initiates an average, is averaged with while it computes, and only locks its own
    model to apply its step. The roles are the 2-colouring of the topology's undirected
    graph with rank 0 active (even/odd ranks on an even ring), so every average joins an
    active and a passive worker, as in the paper. Each average writes the same rounded
    value to both models: ``mean_i x_i`` changes only by the gradient steps.

    Progress: on one node the windows are shared memory (Open MPI ``osc/sm``); the active
    worker does all the work of an average and a passive worker spends nothing on it, even
    while it sleeps or computes. Transports that need the target to call MPI get a progress
    thread (``MPIDEC_RMA_PROGRESS``; cost and measurements in :mod:`mpidec.comm.window`).

    ``topology``: a static topology whose undirected graph is bipartite (default: the ring,
    which needs an even number of workers); any other raises :class:`~mpidec.topology.TopologyError`.
    The model is copied into the window at construction: load weights before building the
    optimizer. End with :meth:`finish` on every worker.
    """

    exchange = "one_sided"      # nothing collective: the average is in _after, through the window
    estimates_consensus = False  # no synchronous gossip: no consensus estimate or control
    default_topology = "ring"

    tuning = ()

    def __init__(self, params, lr, **kwargs):
        for fixed in ("bucket_bytes", "overlap", "measure_consensus", "consensus_control"):
            if fixed in kwargs:
                raise TypeError(f"ADPSGD takes no {fixed!r}: its exchange is one-sided, of the whole model")
        super().__init__(params, lr, bucket_bytes=math.inf, overlap=False, measure_consensus=False, **kwargs)  # one bucket: the window's order
        self.active, self.partners = bipartite_roles(self.topology, self.comm.rank)
        # where a loop keeps its job-wide counter: rank 0's first neighbour, a passive worker,
        # which never starts an average, so no long one of its own delays its answer
        self.counter_rank = bipartite_roles(self.topology, 0)[1][0]
        self._rng = random.Random(self.comm.rank)
        self._window = self.comm.model_window(self.params)

    def _to_send(self, pairs):
        return []  # nothing collective: the average is one-sided, in _after

    def _bytes_so_far(self) -> float:
        """The communicator's count and the window's: the model this worker puts into a
        peer's window at each average (its get brings as many bytes back)."""
        return self.comm.bytes_sent + (self._window.bytes_sent if self._window is not None else 0)

    def _overflowed(self, here: bool) -> bool:
        """GradScaler: a rank whose gradients overflow skips its own step (no average, no
        gradient step); asking the others would make every step wait for them."""
        return here

    def _after(self, pairs):
        if self._window is None:
            raise RuntimeError("ADPSGD.step() after finish(): build a new optimizer to train on")
        steps = {}  # param -> (direction, lr), for the parameters with a gradient
        for group, params in by_group(pairs, with_grad=True):
            grads = [self._gradient(p, group) for p in params]
            steps.update((p, (d, group["lr"])) for p, d in zip(params, self._momentum_directions(params, grads, group)))
        if self.active:
            self._window.average_with(self._rng.choice(self.partners))
        self.last_gossip_rounds = int(self.active)  # its own averages: one a step on the active side
        with self._window.exclusive() as model:
            for (p, _), x in zip(pairs, model):
                if p in steps:
                    d, lr = steps[p]
                    x.add_(d.to(x.device), alpha=-lr)
                p.copy_(x)

    @torch.no_grad()
    def finish(self, average: bool = True) -> int:
        """Collective: stop every worker cleanly; returns the number of steps of all workers.

        Waits until every worker has called it (so no average is in flight), loads the
        final model into the parameters, frees the window and, with ``average``, replaces
        every model by the exact mean over workers (one allreduce).
        """
        total = self.comm.allreduce_scalar(self.steps)  # a barrier: every worker is out of step()
        self._window.load(self.params)
        self._window.free()
        self._window = None
        if average:
            self.comm.allreduce(self.params)
        return int(total)

