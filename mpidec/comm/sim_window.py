"""The simulator's one-sided windows: node models in shared memory, a lock per node model.

Virtual nodes are threads of one process, so a window segment is a plain tensor and a
Get or Put is a copy; :class:`threading.Lock` stands for the MPI window lock. The same
:class:`~mpidec.comm.window.ModelWindow` logic (rank-ordered locks, the pairwise average)
runs on top, so an algorithm behaves here as under MPI, with real thread interleavings.
A lock that cannot be had within the simulator's timeout raises (a deadlock fails).
"""

from __future__ import annotations

import threading

import torch

from .window import Counter, ModelWindow, PendingAdd, check_owner


class SimModelWindow(ModelWindow):
    def __init__(self, comm, tensors):
        self._comm, self._mutex = comm, threading.Lock()
        self._timeout = comm._world.timeout
        super().__init__(comm.rank, tensors)
        self._peers = comm.allgather_object(self)  # every node's window, in rank order

    def _segment(self, numel, dtype):
        return torch.empty(numel, dtype=dtype)

    def _lock(self, rank):
        if not self._peers[rank]._mutex.acquire(timeout=self._timeout):
            raise TimeoutError(f"node {self.rank} waited {self._timeout}s for node {rank}'s model lock")

    def _unlock(self, rank):
        self._peers[rank]._mutex.release()

    def _get(self, rank, k, out):
        out.copy_(self._peers[rank]._segments[k])

    def _put(self, rank, k, src):
        self._peers[rank]._segments[k].copy_(src)

    def free(self):
        """Collective, as under MPI (a node that never frees makes the others time out)."""
        self._comm.allgather_object(None)
        self.views, self._peers = None, None


class SimCounter(Counter):
    """The job-wide counter of virtual nodes: node ``owner``'s integer and a lock."""

    def __init__(self, comm, owner: int = 0):
        check_owner(owner, comm.size)
        self._comm = comm
        self._cell = comm.allgather_object([0, threading.Lock()] if comm.rank == owner else None)[owner]

    def iadd(self, amount: int = 1) -> "_Done":
        with self._cell[1]:
            old = self._cell[0]
            self._cell[0] = old + amount
        return _Done(old)

    def free(self) -> None:
        """Collective, as under MPI."""
        self._comm.allgather_object(None)


class _Done(PendingAdd):
    """A counter add of the simulator: done when started."""

    def __init__(self, value: int):
        self._value = value

    def wait(self) -> int:
        return self._value
