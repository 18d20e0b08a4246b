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
and ``_put``: :class:`MPIModelWindow` below (MPI-3 passive-target RMA) and
:class:`mpidec.comm.sim_window.SimModelWindow` (threads in one process).

Progress of the passive side (the worker whose model is read and written while it computes):

- one node: ``MPI_Win_allocate`` gives Open MPI's ``osc/sm``, a shared-memory segment: Lock,
  Get and Put are atomics and memcpy done by the origin alone, so a passive worker spends
  nothing on its peers' averages (no thread, no CPU), even while it sleeps or computes; it
  only makes them wait while it holds its own lock to apply its step. (``MPI_Win_create``
  on user memory gives ``osc/rdma`` over the vader BTL: also truly one-sided, 4-8x slower.)
- transports that need the target to enter MPI (Open MPI's ``osc/ucx``; ``osc/pt2pt`` also,
  but it refuses the MPI_THREAD_MULTIPLE that mpi4py asks for): a daemon thread calls
  ``MPI_Iprobe`` every ``MPIDEC_RMA_PROGRESS`` seconds (default 1 ms when the job spans
  nodes, off on one node; ``0`` turns it off, a number forces it on). Measured with
  ``--mca osc ucx`` on one 2-core machine, target asleep outside MPI: without the thread an
  average waits until the target next calls MPI (one average in 1.5 s); with it, one every
  1.5-3 ms (256 KB-2 MB models). Cost: about 2% of a core and a short GIL hold per wake-up.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading

import torch

from . import fusion
from .mpi import as_mpi_bytes


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

    def load(self, tensors) -> None:
        """Copy this worker's current model into ``tensors`` (same layout as at creation)."""
        with self.exclusive() as views, torch.no_grad():
            for t, v in zip(tensors, views):
                t.copy_(v)


class MPIModelWindow(ModelWindow):
    """Passive-target RMA: one ``MPI_Win_allocate`` per segment, ``disp_unit`` = item size.

    ``progress``: seconds between the progress thread's ``MPI_Iprobe`` calls, 0 for none;
    default from ``MPIDEC_RMA_PROGRESS``, else 1 ms when the job spans nodes, else none.
    """

    def __init__(self, comm, tensors, progress: float | None = None):
        self._comm, self._wins = comm, []
        super().__init__(comm.Get_rank(), tensors)
        self._stop = threading.Event()
        self._progress = None
        interval = progress_interval(comm) if progress is None else progress
        if interval > 0:
            self._progress = threading.Thread(target=self._progress_loop, args=(interval,),
                                              name="mpidec-rma-progress", daemon=True)
            self._progress.start()

    def _segment(self, numel, dtype):
        from mpi4py import MPI

        item = torch.empty((), dtype=dtype).element_size()
        win = MPI.Win.Allocate(max(numel, 1) * item, disp_unit=item, comm=self._comm)
        self._wins.append(win)
        return torch.frombuffer(win.tomemory(), dtype=dtype, count=max(numel, 1))[:numel]

    def _lock(self, rank):
        from mpi4py import MPI

        for win in self._wins:
            win.Lock(rank, MPI.LOCK_EXCLUSIVE)
            if rank == self.rank:
                win.Sync()  # local loads and stores see the latest remote Puts

    def _unlock(self, rank):
        for win in reversed(self._wins):
            if rank == self.rank:
                win.Sync()  # local stores are visible to the next remote Get
            win.Unlock(rank)

    def _get(self, rank, k, out):
        self._wins[k].Get(as_mpi_bytes(out), rank)
        self._wins[k].Flush(rank)

    def _put(self, rank, k, src):
        self._wins[k].Put(as_mpi_bytes(src), rank)

    def _progress_loop(self, interval):
        from mpi4py import MPI

        while not self._stop.wait(interval):
            MPI.COMM_SELF.Iprobe()  # any MPI call drives the library's progress engine

    def free(self):
        self._stop.set()
        if self._progress is not None:
            self._progress.join()
        self.views, self._segments, self._scratch = None, [], []
        for win in self._wins:
            win.Free()
        self._wins = []


def progress_interval(comm) -> float:
    """``MPIDEC_RMA_PROGRESS`` seconds if set; else 1 ms across nodes, 0 (off) on one node."""
    env = os.environ.get("MPIDEC_RMA_PROGRESS", "").strip()
    if env:
        return float(env)
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    one_node = node.Get_size() == comm.Get_size()
    node.Free()
    return 0.0 if one_node else 1e-3


class MPICounter:
    """A job-wide integer any worker adds to atomically (``MPI_Fetch_and_op`` on rank 0).

    For asynchronous loops that stop on a global amount of work: ``while counter.add(b) < total``.
    """

    def __init__(self, comm):
        from mpi4py import MPI

        self._win = MPI.Win.Allocate(8 if comm.Get_rank() == 0 else 0, disp_unit=8, comm=comm)
        if comm.Get_rank() == 0:
            torch.frombuffer(self._win.tomemory(), dtype=torch.int64).zero_()
        comm.Barrier()  # nobody adds before the value is zero
        self._one, self._old = torch.empty(1, dtype=torch.int64), torch.empty(1, dtype=torch.int64)

    def add(self, amount: int = 1) -> int:
        """Add ``amount``; return the value before (every worker sees distinct totals)."""
        from mpi4py import MPI

        self._one[0] = amount
        self._win.Lock(0, MPI.LOCK_SHARED)
        self._win.Fetch_and_op([self._one.numpy(), MPI.INT64_T], [self._old.numpy(), MPI.INT64_T], 0, op=MPI.SUM)
        self._win.Unlock(0)
        return int(self._old[0])

    def free(self) -> None:
        """Collective."""
        self._win.Free()
