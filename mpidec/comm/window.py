"""One-sided model windows: each worker's model in memory its peers read and write directly.

Every worker exposes its model in a window (collectively: ``comm.model_window(tensors)``).
The model is fused as in an exchange - one contiguous segment per dtype, ``views[k]`` is
tensor ``k``'s place in it - and two operations change it, both atomic::

    window.average_with(j)        x_i, x_j  <-  (x_i + x_j) / 2         (one Get, one Put)
    with window.exclusive() as x: ...                                     (the owner's own update)

Both hold an exclusive lock on every model they touch, taken in rank order, so no update
is lost and no cycle of waiting workers can form, whatever the pairs. The average writes
the same rounded value to both sides: ``x_i + x_j`` is preserved to one rounding, so the
mean over all workers stays constant whatever the interleaving.

Backends supply the transport primitives ``_segment``, ``_lock``, ``_unlock``, ``_get``
and ``_put``: :class:`mpidec.comm.mpi_window.MPIModelWindow` (MPI-3 one-sided windows)
and :class:`mpidec.comm.sim_window.SimModelWindow` (threads in one process). Each backend
also has a job-wide counter (``comm.counter()``, :class:`Counter`).
"""

from __future__ import annotations

import abc
import contextlib

import torch

from . import fusion


class ModelWindow(abc.ABC):
    """This worker's model, fused, where its peers can average with it one-sided.

    ``views``: one view of window memory per tensor given at creation, same shapes and
    dtypes; read or write them only inside :meth:`exclusive`. The window's memory is on
    the host; tensors on a GPU are copied in and out.
    """

    def __init__(self, rank: int, tensors):
        self.rank = rank
        tensors = list(tensors)
        position = {id(t): k for k, t in enumerate(tensors)}
        self._segments, self.views = [], [None] * len(tensors)
        for group in fusion.groups(tensors):
            segment = self._segment(fusion.numel(group), group[0].dtype)
            offset = 0
            for t in group:
                view = segment[offset:offset + t.numel()].view(t.shape)
                view.copy_(t.detach())
                self.views[position[id(t)]] = view
                offset += t.numel()
            self._segments.append(segment)
        self._scratch = [torch.empty_like(s) for s in self._segments]
        self.bytes_sent = 0  # put into peers' windows by average_with (its gets bring as many back)

    # ------------------------------------------------------------ transport primitives

    @abc.abstractmethod
    def _segment(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """Collective: a new 1-D window of ``numel`` elements on every worker; this worker's part."""

    @abc.abstractmethod
    def _lock(self, rank: int) -> None:
        """Exclusive lock on every segment of ``rank``'s model (blocks while another holds it)."""

    @abc.abstractmethod
    def _unlock(self, rank: int) -> None:
        """Release the lock; Puts to ``rank`` are complete when this returns."""

    @abc.abstractmethod
    def _get(self, rank: int, k: int, out: torch.Tensor) -> None:
        """``out <- segment k of rank``, complete on return (inside a lock on ``rank``)."""

    @abc.abstractmethod
    def _put(self, rank: int, k: int, src: torch.Tensor) -> None:
        """``segment k of rank <- src`` (inside a lock on ``rank``; complete at unlock)."""

    @abc.abstractmethod
    def free(self) -> None:
        """Collective: release the window; ``views`` are invalid afterwards."""

    # ------------------------------------------------------------ operations

    @contextlib.contextmanager
    def _locked(self, *ranks):
        ranks = sorted(set(ranks))  # one global order: no two workers wait on each other
        locked = []
        try:
            for r in ranks:
                self._lock(r)
                locked.append(r)
            yield
        finally:
            for r in reversed(locked):
                self._unlock(r)

    @contextlib.contextmanager
    def exclusive(self):
        """This worker's model, locked against peers' averages: ``with w.exclusive() as views``."""
        with self._locked(self.rank):
            yield self.views

    def average_with(self, peer: int) -> None:
        """``x_self, x_peer <- (x_self + x_peer) / 2``, atomically for both models."""
        if peer == self.rank:
            raise ValueError(f"worker {self.rank} cannot average with itself")
        with self._locked(self.rank, peer):
            for k, (mine, theirs) in enumerate(zip(self._segments, self._scratch)):
                self._get(peer, k, theirs)
                mine.add_(theirs).mul_(0.5)  # the same rounded value goes to both sides
                self._put(peer, k, mine)
                self.bytes_sent += mine.numel() * mine.element_size()

    def load(self, tensors) -> None:
        """Copy this worker's current model into ``tensors`` (same layout as at creation)."""
        with self.exclusive() as views, torch.no_grad():
            for t, v in zip(tensors, views):
                t.copy_(v)


class Counter(abc.ABC):
    """A job-wide integer any worker adds to atomically, without the others taking part.

    For asynchronous loops that stop on a global amount of work: ``while counter.add(b) < total``;
    ``pending = counter.iadd(b)`` starts an add and ``pending.wait()`` returns its value, so
    a worker can draw its next ticket while it computes.
    """

    def add(self, amount: int = 1) -> int:
        """Add ``amount``; return the value before (every worker sees distinct totals)."""
        return self.iadd(amount).wait()

    @abc.abstractmethod
    def iadd(self, amount: int = 1) -> "PendingAdd":
        """Start adding ``amount``; ``.wait()`` on the result returns the value before."""

    @abc.abstractmethod
    def free(self) -> None:
        """Collective: release the counter."""


def check_owner(owner: int, size: int) -> None:
    """A counter's owner must be a rank of its communicator."""
    if not 0 <= owner < size:
        raise ValueError(f"counter owner {owner} is not a rank of this communicator (0..{size - 1})")


class PendingAdd(abc.ABC):
    """An add to a :class:`Counter` under way (one per call of ``iadd``; wait for each)."""

    @abc.abstractmethod
    def wait(self) -> int:
        """Block until the add is done; return the counter's value before it."""
