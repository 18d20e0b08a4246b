"""The MPI model window and counter: MPI-3 one-sided windows that need no help from the target.

Every window lives in one passive-target epoch from creation to ``free`` (``MPI_Win_lock_all``).
The exclusive lock on a model is a ticket lock of our own: two int64 on the model's owner,
``next`` (a worker draws a ticket with ``MPI_Fetch_and_op(SUM)``) and ``serving`` (read with
``MPI_Fetch_and_op(NO_OP)`` until it shows the ticket; ``MPI_Accumulate(SUM)`` passes the lock
on). Waiters are served in order, so averages never starve the owner applying its step. The
counter is one ``MPI_Fetch_and_op`` and ``MPI_Win_flush`` (``iadd``: on a thread of its own).

Why not MPI's own locks: MPICH grants ``MPI_Win_lock`` through the target's progress engine,
so an average with a worker that computes outside MPI waited until that worker next called
MPI (``mpich`` 5.0.2 wheel, target busy: 1-3 lock/get/put/unlock a second, also with
``MPI_Win_allocate_shared``, and as many adds of ``mpi4py.util.sync.Counter``, which takes
``MPI_Win_lock(SHARED)`` around every increment). Atomics, Get and Put inside ``lock_all`` are
done by the origin alone on one node under MPICH 5, Open MPI 5 and Open MPI 4.1, so a passive
worker spends nothing on its peers' averages, even while it sleeps or computes. (A plain
``MPI_Compare_and_swap`` lock would do as well, but Open MPI 4.1.4's ``osc/rdma``, what
``MPI_Win_allocate`` gets on one node, crashes in it over the vader BTL.)

Across nodes the transport may need the target to enter MPI (MPICH's TCP netmod, Open MPI's
``osc/ucx``): a daemon thread calls ``MPI_Iprobe`` on a duplicate of the window's communicator
every ``MPIDEC_RMA_PROGRESS`` seconds (default 1 ms when the job spans nodes, off on one node;
``0`` turns it off, a number forces it on). ``MPI_Iprobe`` on ``MPI_COMM_SELF`` does not drive
MPICH's one-sided progress; on a duplicate of the window's communicator it does. Measured with
``--mca osc ucx`` (Open MPI 4.1) on one 2-core machine, target asleep outside MPI: without the
thread one average in 1.5 s; with it one every 1.5-3 ms (256 KB-2 MB models). Cost: about 2%
of a core and a short GIL hold per wake-up.
"""

from __future__ import annotations

import os
import threading
import time

import torch

from ..runtime import node_rank_and_size
from .mpi_buffer import as_mpi_bytes
from .window import Counter, ModelWindow, PendingAdd, check_owner

_NEXT, _SERVING = 0, 1  # the ticket lock's two words


class MPIModelWindow(ModelWindow):
    """Models in ``MPI_Win_allocate`` windows (one per segment, ``disp_unit`` = item size),
    one ticket lock (two int64) per worker.

    ``progress``: seconds between the progress thread's ``MPI_Iprobe`` calls, 0 for none;
    default :func:`progress_interval`.
    """

    def __init__(self, comm, tensors, progress: float | None = None):
        from mpi4py import MPI

        self._comm, self._wins = comm, []
        self._tickets = _allocate(comm, 16, 8)
        torch.frombuffer(self._tickets.tomemory(), dtype=torch.int64).zero_()
        super().__init__(comm.Get_rank(), tensors)
        self._one, self._zero = _int64(1), _int64(0)
        self._ticket, self._serving = _int64(0), _int64(0)
        for win in (self._tickets, *self._wins):
            win.Lock_all(MPI.MODE_NOCHECK)
            win.Sync()  # the initial model and tickets are visible to every origin
        comm.Barrier()
        self._progress = _Progress.start(comm, progress)

    def _segment(self, numel, dtype):
        item = torch.empty((), dtype=dtype).element_size()
        win = _allocate(self._comm, max(numel, 1) * item, item)
        self._wins.append(win)
        return torch.frombuffer(win.tomemory(), dtype=dtype, count=max(numel, 1))[:numel]

    def _lock(self, rank):
        from mpi4py import MPI

        one, zero = [self._one.numpy(), MPI.INT64_T], [self._zero.numpy(), MPI.INT64_T]
        self._tickets.Fetch_and_op(one, [self._ticket.numpy(), MPI.INT64_T], rank, _NEXT, op=MPI.SUM)
        self._tickets.Flush(rank)
        for _ in _backoff():
            self._tickets.Fetch_and_op(zero, [self._serving.numpy(), MPI.INT64_T], rank, _SERVING, op=MPI.NO_OP)
            self._tickets.Flush(rank)
            if self._serving[0] == self._ticket[0]:
                break
        if rank == self.rank:
            for win in self._wins:
                win.Sync()  # local loads see the Puts of the previous holder

    def _unlock(self, rank):
        from mpi4py import MPI

        for win in self._wins:
            if rank == self.rank:
                win.Sync()  # local stores are visible to the next holder's Get
            else:
                win.Flush(rank)  # our Puts are complete at the target
        self._tickets.Accumulate([self._one.numpy(), MPI.INT64_T], rank, _SERVING, op=MPI.SUM)
        self._tickets.Flush(rank)  # the next ticket is served

    def _get(self, rank, k, out):
        self._wins[k].Get(as_mpi_bytes(out), rank)
        self._wins[k].Flush(rank)

    def _put(self, rank, k, src):
        self._wins[k].Put(as_mpi_bytes(src), rank)

    def free(self):
        self._progress.stop()
        self.views, self._segments, self._scratch = None, [], []
        for win in (*self._wins, self._tickets):
            win.Unlock_all()
            win.Free()
        self._wins, self._tickets = [], None


class MPICounter(Counter):
    """An int64 on rank ``owner``, added to with ``MPI_Fetch_and_op`` inside a ``lock_all`` epoch.

    (``mpi4py.util.sync.Counter`` would do, but for its per-increment ``MPI_Win_lock``: see
    the module's docstring.)
    """

    def __init__(self, comm, owner: int = 0, progress: float | None = None):
        from mpi4py import MPI

        check_owner(owner, comm.Get_size())
        self._owner = owner
        self._win = _allocate(comm, 8 if comm.Get_rank() == owner else 0, 8)
        if comm.Get_rank() == owner:
            torch.frombuffer(self._win.tomemory(), dtype=torch.int64).zero_()
        self._win.Lock_all(MPI.MODE_NOCHECK)
        self._win.Sync()
        comm.Barrier()  # nobody adds before the value is zero
        self._progress = _Progress.start(comm, progress)
        self._background = MPI.Query_thread() == MPI.THREAD_MULTIPLE  # else each add is done when started

    def iadd(self, amount: int = 1) -> "_PendingAdd":
        """On a thread of its own (with ``MPI_THREAD_MULTIPLE``): Open MPI 4.1's ``osc/ucx``
        returns from ``MPI_Fetch_and_op`` only once the owner has served the add, and the
        owner may be busy in MPI (see :mod:`mpidec.train.asynchronous`)."""
        return _PendingAdd(self._add, amount, background=self._background)

    def _add(self, amount: int) -> int:
        from mpi4py import MPI

        add, old = _int64(amount), _int64(0)
        self._win.Fetch_and_op([add.numpy(), MPI.INT64_T], [old.numpy(), MPI.INT64_T], self._owner, 0, op=MPI.SUM)
        self._win.Flush(self._owner)
        return int(old[0])

    def free(self) -> None:
        self._progress.stop()
        self._win.Unlock_all()
        self._win.Free()


class _PendingAdd(PendingAdd):
    """A counter add done by a daemon thread (or at once, ``background=False``); ``wait``
    returns its value or raises what it raised."""

    def __init__(self, add, amount: int, background: bool):
        self._outcome, self._thread = None, None
        if background:
            self._thread = threading.Thread(target=self._run, args=(add, amount), name="mpidec-counter-add",
                                            daemon=True)  # a job that ends with an add in flight does not wait for it
            self._thread.start()
        else:
            self._run(add, amount)

    def _run(self, add, amount: int) -> None:
        try:
            self._outcome = add(amount)
        except BaseException as error:  # raised in wait(), on the thread that asked for the add
            self._outcome = error

    def wait(self) -> int:
        if self._thread is not None:
            self._thread.join()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome


def progress_interval(comm) -> float:
    """``MPIDEC_RMA_PROGRESS`` seconds if set; else 1 ms across nodes, 0 (off) on one node."""
    env = os.environ.get("MPIDEC_RMA_PROGRESS", "").strip()
    if env:
        try:
            return float(env)
        except ValueError:
            raise ValueError(f"MPIDEC_RMA_PROGRESS={env!r} is not a number of seconds (0 turns the "
                             "progress thread off)") from None
    return 0.0 if node_rank_and_size(comm)[1] == comm.Get_size() else 1e-3


class _Progress:
    """A daemon thread that enters MPI every ``interval`` seconds, so that a transport which
    needs the target's help serves peers while this worker computes outside MPI."""

    def __init__(self, comm, interval: float):
        self._stop = threading.Event()
        self._comm = comm.Dup() if interval > 0 else None  # collective, as is Free in stop()
        self._thread = None
        if self._comm is not None:
            self._thread = threading.Thread(target=self._loop, args=(interval,),
                                            name="mpidec-rma-progress", daemon=True)
            self._thread.start()

    @classmethod
    def start(cls, comm, interval: float | None) -> "_Progress":
        return cls(comm, progress_interval(comm) if interval is None else interval)

    def _loop(self, interval):
        while not self._stop.wait(interval):
            self._comm.Iprobe()  # MPI_ANY_SOURCE, MPI_ANY_TAG: drives the progress engine

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._comm.Free()
            self._thread = self._comm = None


def _allocate(comm, nbytes: int, disp_unit: int):
    from mpi4py import MPI

    return MPI.Win.Allocate(nbytes, disp_unit=disp_unit, comm=comm)


def _int64(value: int) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.int64)


def _backoff():
    """Yields forever: at once for the first tries, then after sleeps doubling up to 1 ms."""
    attempt = 0
    while True:
        yield attempt
        attempt += 1
        if attempt > 8:
            time.sleep(1e-6 * 2 ** min(attempt - 8, 10))
