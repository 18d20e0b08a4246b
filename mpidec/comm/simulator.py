"""n virtual workers in one process: the second backend of the communicator.

Each virtual node runs the same code an MPI rank would, in its own thread, with a
:class:`SimCommunicator` in place of the MPI one::

    sim = Simulator(16)
    results = sim.run(train_one_worker)      # train_one_worker(comm) on 16 threads

Collectives match by order, as in MPI: the k-th collective a node starts meets the
k-th collective of every other node. A node's result depends only on the data, never
on thread timing (sums run in rank order), so runs are deterministic and serve as the
oracle that MPI runs must match. An exception on one node ends all of them.
"""

from __future__ import annotations

import threading

import torch

from .base import Communicator


class SimulatorAborted(RuntimeError):
    """Raised on the other nodes when one node failed."""


class _Collective:
    """What every node posted for one collective, and how many have read it (the last frees it)."""

    def __init__(self, n: int):
        self.items = [None] * n
        self.posted = 0
        self.read = 0


class _Request:
    def __init__(self, finish):
        self.wait = finish


class Simulator:
    """A world of ``n`` virtual nodes; ``timeout`` bounds every wait (a deadlock fails)."""

    def __init__(self, n: int, *, timeout: float = 120.0, cuda_aware: bool = True):
        self.n, self.timeout = n, timeout
        self._cond = threading.Condition()
        self._collectives: dict[int, _Collective] = {}
        self._failure: tuple[int, BaseException] | None = None
        self.comms = [SimCommunicator(self, rank, cuda_aware) for rank in range(n)]

    def run(self, fn, *args, **kwargs) -> list:
        """Call ``fn(comm, *args, **kwargs)`` on every node in parallel; return the results in rank order."""
        results = [None] * self.n

        def node(rank):
            try:
                results[rank] = fn(self.comms[rank], *args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - every failure must stop the others
                with self._cond:
                    if self._failure is None:
                        self._failure = (rank, exc)
                    self._cond.notify_all()

        threads = [threading.Thread(target=node, args=(r,), name=f"sim-node-{r}") for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self._failure is not None:
            rank, exc = self._failure
            self._failure = None
            self._collectives.clear()
            raise RuntimeError(f"simulated node {rank} failed: {exc!r}") from exc
        return results

    # -------------------------------------------------- collective matching

    def _post(self, seq: int, rank: int, item) -> _Collective:
        with self._cond:
            coll = self._collectives.setdefault(seq, _Collective(self.n))
            coll.items[rank] = item
            coll.posted += 1
            if coll.posted == self.n:
                self._cond.notify_all()
            return coll

    def _gather(self, coll: _Collective) -> list:
        """Wait until every node posted; the caller reads ``items`` then calls ``_done``."""
        self._wait_for(lambda: coll.posted == self.n)
        return coll.items

    def _done(self, seq: int, coll: _Collective) -> None:
        with self._cond:
            coll.read += 1
            if coll.read == self.n:
                del self._collectives[seq]

    def _wait_for(self, predicate) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate() or self._failure is not None, self.timeout)
            if self._failure is not None:
                raise SimulatorAborted(f"node {self._failure[0]} failed")
            if not ok:
                raise TimeoutError(f"a simulated collective waited {self.timeout}s: do all nodes "
                                   "start the same collectives in the same order?")


class SimCommunicator(Communicator):
    """One virtual node's communicator; collectives meet the other nodes' in order."""

    def __init__(self, world: Simulator, rank: int, cuda_aware: bool):
        super().__init__(rank, world.n, cuda_aware)
        self._world = world
        self._seq = 0

    def _collective(self, item, combine):
        """Post ``item``; the request's ``wait()`` returns ``combine(all items)``.

        Tensors are posted as copies, so the poster may reuse its buffer as soon as its
        own ``wait()`` returns, while slower nodes still read (MPI's buffer semantics).
        """
        if isinstance(item, torch.Tensor):
            item = item.clone()
        seq, self._seq = self._seq, self._seq + 1
        coll = self._world._post(seq, self.rank, item)

        def finish():
            try:
                return combine(self._world._gather(coll))
            finally:
                self._world._done(seq, coll)

        return _Request(finish)

    def _start_neighbor_allgather(self, plan, send, recv):
        def combine(items):
            for row, j in enumerate(plan.sources):
                recv[row].copy_(items[j])

        return self._collective(send, combine)

    def _start_allreduce(self, buf):
        request = self._collective(buf, _sum_in_rank_order)
        return _Request(lambda: buf.copy_(request.wait()))

    def _start_alltoall(self, send, recv):
        def combine(items):
            for j, item in enumerate(items):
                recv[j].copy_(item[self.rank])

        return self._collective(send, combine)

    def _start_allgather(self, send, recv):
        def combine(items):
            for j, item in enumerate(items):
                recv[j].copy_(item)

        return self._collective(send, combine)

    def allreduce_scalar(self, value, op="sum"):
        return self._collective(float(value), lambda items: _reduce(items, op)).wait()

    def allgather_object(self, obj):
        return self._collective(obj, list).wait()

    def model_window(self, tensors):
        from .sim_window import SimModelWindow

        return SimModelWindow(self, tensors)

    def counter(self, owner: int = 0):
        from .sim_window import SimCounter

        return SimCounter(self, owner)


def _sum_in_rank_order(tensors):
    total = tensors[0].clone()
    for t in tensors[1:]:
        total += t
    return total


def _reduce(values, op):
    if op == "sum":
        return sum(values)
    if op == "mean":
        return sum(values) / len(values)
    if op in ("max", "min"):
        return max(values) if op == "max" else min(values)
    raise ValueError(f"unknown reduction {op!r}; use 'sum', 'mean', 'max' or 'min'")
