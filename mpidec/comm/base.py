"""The communicator interface that optimizers talk to, and the logic both backends share.

A backend (MPI or the in-process simulator) supplies six transport primitives (the
abstract methods below):

- ``_start_neighbor_allgather(plan, send, recv)``: row ``r`` of ``recv`` receives the
  ``send`` buffer of in-neighbour ``plan.sources[r]``; returns a request;
- ``_start_allreduce(buf)``: in-place sum of ``buf`` over all ranks; returns a request;
- ``_start_alltoall(send, recv)`` and ``_start_allgather(send, recv)``: byte rows, for the
  majority vote; return requests;
- ``allreduce_scalar(value, op)`` and ``allgather_object(obj)``: blocking, for metrics
  and checks off the hot path.

A request is anything with ``wait()``. Every request started here is kept with the
buffers it reads and writes (:class:`_InFlight`): a handle dropped before ``wait()`` (an
optimizer deleted with messages in flight, as OSGP's are between steps) leaves them to
the communicator, which completes them at its next operation, so the transport never
writes into freed memory. ``bytes_sent`` counts, at these primitives, the
bytes this rank hands the transport: a send buffer times its destinations (an allreduce
as a ring's ``2 (n - 1) / n`` of its buffer, whatever algorithm the library picks).
Everything else - fusing tensors into one buffer per dtype and device, host staging of
GPU tensors, the weighted combine, buffer reuse - lives here once, so MPI runs and
simulated runs compute the same numbers.
"""

from __future__ import annotations

import abc
import weakref

import torch

from . import bits, fusion

MAX_PLANS = 64  # gossip plans kept per communicator (a periodic schedule needs one per period step)


class Handle:
    """An operation in flight; ``wait()`` completes it (once) and returns its result."""

    def __init__(self, finish):
        self._finish = finish
        self._done = False
        self._result = None

    def wait(self):
        if not self._done:
            self._result = self._finish()
            self._done = True
        return self._result


class _InFlight:
    """A transport request and the buffers it uses. ``wait()`` completes it; dropped unwaited,
    it hands both to ``orphans`` (its communicator's), which keeps the buffers alive until the
    request is complete (MPI writes into a receive buffer whenever the message arrives)."""

    __slots__ = ("request", "buffers", "orphans")

    def __init__(self, request, buffers, orphans):
        self.request, self.buffers, self.orphans = request, buffers, orphans

    def wait(self):
        self.request.wait()
        self.buffers = None

    def __del__(self):
        if self.buffers is not None:
            self.orphans.append(self)


class Communicator(abc.ABC):
    """One rank's view of the workers: neighbour averages, allreduce, small collectives.

    It knows no topology: every neighbour operation is given the one to use (the
    optimizer owns its topology; metrics and checkpoints need none).
    ``cuda_aware``: whether the transport may read and write GPU memory directly;
    when it may not, GPU buffers go through pinned host staging buffers.
    """

    rank: int
    size: int

    def __init__(self, rank: int, size: int, cuda_aware: bool = False):
        self.rank, self.size = rank, size
        self.cuda_aware = cuda_aware
        self._pool = fusion.BufferPool(pin_memory=True)
        # static topology -> _Plan, least recently used first; weak, so that the topologies of
        # an aperiodic schedule (a new object every step) take their plans with them
        self._plans = weakref.WeakKeyDictionary()
        self.bytes_sent = 0  # at the transport primitives, since creation (module docstring)
        self._orphans: list[_InFlight] = []  # requests whose handles were dropped unwaited

    # ------------------------------------------------------------ transport primitives

    @abc.abstractmethod
    def _start_neighbor_allgather(self, plan: "_Plan", send: torch.Tensor, recv: torch.Tensor):
        """Start filling ``recv[r]`` with the ``send`` of ``plan.sources[r]``; return a request."""

    @abc.abstractmethod
    def _start_allreduce(self, buf: torch.Tensor):
        """Start summing ``buf`` in place over all ranks; return a request."""

    @abc.abstractmethod
    def allreduce_scalar(self, value: float, op: str = "sum") -> float:
        """Blocking reduction of one number: ``op`` is 'sum', 'mean', 'max' or 'min'."""

    @abc.abstractmethod
    def allgather_object(self, obj) -> list:
        """Blocking gather of a small picklable object from every rank, in rank order."""

    @abc.abstractmethod
    def _start_alltoall(self, send: torch.Tensor, recv: torch.Tensor):
        """Start ``recv[j] <- row `rank` of rank j's send`` (2-D byte buffers, a row per rank)."""

    @abc.abstractmethod
    def _start_allgather(self, send: torch.Tensor, recv: torch.Tensor):
        """Start ``recv[j] <- rank j's send`` (``recv`` has a row per rank)."""

    # ------------------------------------------------------------ neighbour averaging

    def neighbor_average_async(self, tensors, topology, step: int = 0, *, measure: bool = False,
                               wire_dtype=None, fuse: bool = True) -> Handle:
        """Start ``x_i <- sum_j W[i, j] x_j`` for every tensor, with W = ``topology.at(step)``.

        Returns a :class:`Handle`; the tensors hold the average after ``wait()`` and must
        not be read or written before. Tensors travel as one message per dtype and device:
        a lone contiguous tensor (an optimizer's flat buffer, :mod:`mpidec.optim.flat`) is
        sent from and combined into its own memory; several are packed into one buffer
        first (one more pass). ``fuse=False``: every tensor is its own message, in place
        (for tensors that are flat buffers already). With ``measure``, ``wait()`` returns
        ``||x_i - sum_j W[i, j] x_j||^2`` summed over the tensors (this rank's part of the
        cheap consensus estimate; no extra exchange, and the rows are still read once: the
        residual ``r`` is computed, its norm taken and ``x_i - r`` is the combine).
        ``wire_dtype`` (e.g. ``torch.bfloat16``): the tensors travel rounded to it, and the
        combine runs in their own dtype on the own tensor as it is and the received ones
        widened: ``x_i <- W[i, i] x_i + sum_{j != i} W[i, j] round(x_j)``.
        """
        if wire_dtype is not None and not wire_dtype.is_floating_point:
            raise TypeError(f"wire_dtype must be a floating-point dtype, got {wire_dtype}")
        plan = self._plan(topology.at(step))
        groups = fusion.groups(tensors) if fuse else [[t] for t in tensors]
        finishers = [self._start_average(group, plan, measure, wire_dtype) for group in groups]
        if len(finishers) == 1:
            return Handle(finishers[0])

        def finish():
            residuals = [finish_group() for finish_group in finishers]
            return sum(residuals) if measure else None

        return Handle(finish)

    def neighbor_average(self, tensors, topology, step: int = 0, *, measure: bool = False, wire_dtype=None,
                         fuse: bool = True):
        return self.neighbor_average_async(tensors, topology, step, measure=measure, wire_dtype=wire_dtype,
                                           fuse=fuse).wait()

    def _plan(self, topo) -> "_Plan":
        """The plan of a static topology, cached: at most ``MAX_PLANS``, none beyond its topology's life."""
        plan = self._plans.pop(topo, None)
        if plan is None:
            topo.check_size(self.size)
            plan = _Plan(topo, self.rank)
            if len(self._plans) >= MAX_PLANS:
                del self._plans[next(iter(self._plans))]
        self._plans[topo] = plan  # most recently used last
        return plan

    def _start_average(self, group, plan, measure, wire_dtype):
        """Start one message: ``own`` (the group's own memory, or a packed copy) goes to the
        out-neighbours, ``recv[r]`` receives in-neighbour ``plan.sources[r]``'s; the returned
        function waits and combines ``w_0 own + recv^T w_n`` into the group."""
        dtype, device = group[0].dtype, group[0].device
        if not dtype.is_floating_point:
            raise TypeError(f"neighbour averaging needs floating-point tensors, got {dtype}")
        own = fusion.flat_view(group)
        packed = own is None
        if packed:
            own = fusion.pack(group, out=self._pool.take((fusion.numel(group),), dtype, device))
        recv = self._pool.take((len(plan.sources), own.numel()), dtype, device)
        send_w, recv_w = own, recv
        if wire_dtype not in (None, dtype):                      # rounded to the wire's dtype
            send_w = self._pool.take(own.shape, wire_dtype, device)
            send_w.copy_(own)
            recv_w = self._pool.take(recv.shape, wire_dtype, device)
        send_x, recv_x = self._staging(send_w), self._staging(recv_w, rows=0)
        self._count(send_x, len(plan.destinations))
        request = self._in_flight(self._start_neighbor_allgather(plan, send_x, recv_x), send_x, recv_x)
        w0, wn = plan.self_weight, plan.neighbor_weights(dtype, device)

        def finish():
            request.wait()
            self._unstage(send_w, send_x, received=None)
            self._unstage(recv_w, recv_x)
            if recv_w is not recv:                               # widen the neighbours' rows; own stays exact
                recv.copy_(recv_w)
                self._pool.give(send_w)
                self._pool.give(recv_w)
            residual = None
            if measure:
                residual = self._measured_combine(own, recv, w0, wn)
            else:
                fusion.combine(own, recv, w0, wn, out=own)
            if packed:
                fusion.unpack(own, group)
                self._pool.give(own)
            self._pool.give(recv)
            return residual

        return finish

    def _measured_combine(self, own, recv, w0, wn) -> float:
        """The combine with the residual ``||x_i - sum_j W[i, j] x_j||^2``, reading the rows once:
        ``r = (1 - w0) own - recv^T wn`` (one pass over the rows), its norm, then ``own -= r``
        (``own - r = w0 own + recv^T wn``, the combine, up to rounding)."""
        r = self._pool.take(own.shape, own.dtype, own.device)
        torch.addmv(own, recv.t(), wn, beta=1.0 - w0, alpha=-1.0, out=r)
        value = torch.linalg.vector_norm(r).item() ** 2  # in the buffer's dtype: a float64 upcast costs 30x
        own.sub_(r)
        self._pool.give(r)
        return value

    def neighbor_allgather_async(self, tensor, topology, step: int = 0) -> Handle:
        """Start gathering the in-neighbours' ``tensor``: ``wait()`` returns a new tensor of
        shape ``(k, *tensor.shape)`` whose row ``r`` is the ``tensor`` of in-neighbour
        ``topology.at(step).in_neighbors(rank)[r]``. Only ``tensor``'s bytes travel (a
        compressed payload, say) and nothing is combined; every rank must pass the same
        shape and dtype at the same call (the transport moves fixed-size rows). A contiguous
        ``tensor`` is sent from its own memory: do not write it before ``wait()``.
        """
        plan = self._plan(topology.at(step))
        send = tensor.reshape(-1)  # a view when contiguous
        rows = torch.empty((len(plan.sources), send.numel()), dtype=tensor.dtype, device=tensor.device)
        send_x, recv_x = self._staging(send), self._staging(rows, rows=0)
        self._count(send_x, len(plan.destinations))
        request = self._in_flight(self._start_neighbor_allgather(plan, send_x, recv_x), send_x, recv_x)

        def finish():
            request.wait()
            self._unstage(send, send_x, received=None)
            self._unstage(rows, recv_x)
            return rows.view(len(plan.sources), *tensor.shape)

        return Handle(finish)

    # ------------------------------------------------------------ allreduce

    def allreduce_async(self, tensors, average: bool = True, *, fuse: bool = True) -> Handle:
        """Start the sum (or mean) of every tensor over all ranks, in place: a lone contiguous
        tensor of its dtype and device in its own memory, several packed into one buffer
        (``fuse=False``: every tensor in its own memory, one reduction each)."""
        parts = []
        for group in (fusion.groups(tensors) if fuse else [[t] for t in tensors]):
            buf = fusion.flat_view(group)
            packed = buf is None
            if packed:
                buf = fusion.pack(group, out=self._pool.take((fusion.numel(group),), group[0].dtype, group[0].device))
            wire = self._staging(buf)
            self._count(wire, 2 * (self.size - 1) / self.size)
            parts.append((group, buf, packed, wire, self._in_flight(self._start_allreduce(wire), wire)))

        def finish():
            for group, buf, packed, wire, request in parts:
                request.wait()
                self._unstage(buf, wire)
                if average:
                    buf.div_(self.size)
                if packed:
                    fusion.unpack(buf, group)
                    self._pool.give(buf)

        return Handle(finish)

    def allreduce(self, tensors, average: bool = True, *, fuse: bool = True) -> None:
        self.allreduce_async(tensors, average, fuse=fuse).wait()

    # ------------------------------------------------------------ majority vote (1 bit per element)

    def majority_vote_async(self, tensors, out) -> Handle:
        """Start ``out <- sign(sum over ranks of sign(tensors))``, 1 bit per element each way.

        Each rank owns a shard of the positions: an all-to-all sends every rank the bits
        of its shard (reduce-scatter), it counts the votes and packs the result, an
        allgather returns all shards. Ties: see :func:`mpidec.comm.bits.vote`. Every rank
        sends ``2 (n - 1) / n`` bits per element: 1/32 of a float32 ring allreduce. Only the
        all-to-all is started here; ``wait()`` counts the votes and runs the allgather.
        """
        numel, dtype, device = fusion.numel(tensors), tensors[0].dtype, tensors[0].device
        shard = 8 * bits.packed_size(-(-numel // self.size))            # positions per rank, whole bytes
        padded = self._pool.take((shard * self.size,), dtype, device)
        fusion.pack(tensors, out=padded[:numel])
        padded[numel:].zero_()
        packed = bits.pack_signs(padded).view(self.size, shard // 8)
        self._pool.give(padded)
        send = self._staging(packed)
        recv = torch.empty_like(send)
        self._count(send, (self.size - 1) / self.size)                 # every row but its own
        request = self._in_flight(self._start_alltoall(send, recv), send, recv)

        def finish():
            request.wait()
            self._unstage(packed, send, received=None)
            mine = bits.vote(recv.to(device), shard, offset=self.rank * shard)
            votes = torch.empty_like(recv)
            wire = self._staging(mine)
            self._count(wire, self.size - 1)
            self._start_allgather(wire, votes).wait()
            self._unstage(mine, wire, received=None)
            fusion.unpack(bits.unpack_signs(votes.reshape(-1).to(device), shard * self.size, dtype), out)

        return Handle(finish)

    # ------------------------------------------------------------ one-sided windows

    def model_window(self, tensors):
        """Collective: this rank's :class:`mpidec.comm.window.ModelWindow` holding ``tensors``."""
        raise NotImplementedError(f"{type(self).__name__} has no one-sided windows")

    def counter(self, owner: int = 0):
        """Collective: a job-wide integer every rank adds to atomically (``add(k)`` returns the
        old value), in ``owner``'s memory."""
        raise NotImplementedError(f"{type(self).__name__} has no one-sided windows")

    # ------------------------------------------------------------ helpers

    def _in_flight(self, request, *buffers) -> _InFlight:
        """``request`` tracked with its ``buffers``; first, the orphans are completed (their
        operations were started on every rank, so waiting for them ends)."""
        while self._orphans:
            self._orphans.pop(0).wait()
        return _InFlight(request, buffers, self._orphans)

    def _count(self, send: torch.Tensor, destinations: float) -> None:
        self.bytes_sent += send.numel() * send.element_size() * destinations

    def _staging(self, buf: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """The buffer the transport sees: ``buf`` itself, or a pinned host twin of a GPU buffer
        holding a copy of ``buf`` (of its first ``rows`` rows: the others are to be received).
        Give a twin back with :meth:`_unstage`."""
        if not buf.is_cuda:
            return buf
        if self.cuda_aware:
            torch.cuda.current_stream(buf.device).synchronize()  # packing must finish before MPI reads
            return buf
        wire = self._pool.take(buf.shape, buf.dtype, "cpu")
        wire[:rows].copy_(buf[:rows])
        return wire

    def _unstage(self, buf: torch.Tensor, wire: torch.Tensor, received=slice(None)) -> None:
        """Copy what the transport received into ``wire[received]`` back to ``buf``; free the twin."""
        if wire is not buf:
            if received is not None:
                buf[received].copy_(wire[received])
            self._pool.give(wire)

    def check_same_shapes(self, tensors, what: str = "parameter") -> None:
        """Raise, with the same message on every rank, if shapes or dtypes differ between ranks."""
        everyone = self.allgather_object([(tuple(t.shape), str(t.dtype)) for t in tensors])
        first = everyone[0]
        for rank, theirs in enumerate(everyone):
            if len(theirs) != len(first):
                raise ValueError(f"rank 0 has {len(first)} {what}s but rank {rank} has {len(theirs)}: "
                                 "every rank must build the same model")
            for i, (a, b) in enumerate(zip(first, theirs)):
                if a != b:
                    raise ValueError(f"{what} {i} is {a} on rank 0 but {b} on rank {rank}: "
                                     "every rank must build the same model")


class _Plan:
    """What one rank needs to gossip over one static topology, computed once per topology:
    its in- and out-neighbours, the edge set (the key of the MPI graph communicator) and its
    row of W (``self_weight = W[i, i]``, the neighbours' as a tensor per dtype and device).
    It holds no reference to the topology (the cache of plans is keyed by the topology,
    weakly)."""

    def __init__(self, topo, rank: int):
        self.sources = topo.in_neighbors(rank)
        self.destinations = topo.out_neighbors(rank)
        self.edges = topo.edges()
        self.self_weight = float(topo.W[rank, rank])
        self._row = topo.W[rank, self.sources]  # a copy (fancy indexing)
        self._cache = {}

    def neighbor_weights(self, dtype, device) -> torch.Tensor:
        """``w_n = (W[i, j_1], ..., W[i, j_k])``: the combine's coefficients of the received rows."""
        c = self._cache.get((dtype, device))
        if c is None:
            c = self._cache[(dtype, device)] = torch.as_tensor(self._row, dtype=dtype, device=device)
        return c
