"""The MPI backend: neighbourhood collectives on distributed-graph communicators.

One gossip round of a static topology is one ``MPI_Ineighbor_allgather`` on a
communicator made by ``MPI_Dist_graph_create_adjacent`` (sources = in-neighbours,
destinations = out-neighbours). Graph communicators are cached by edge set, so a
time-varying schedule (one-peer exponential, random matching) builds each distinct
graph once, not once per step. A small message (up to ``MPIDEC_P2P_BYTES``, 64 KiB by
default) goes point to point instead, as persistent requests prepared once per edge set
and buffers, on a private duplicate of the communicator: a step's exchange is one
``MPI_Startall`` (7 us for a 1 KB ring exchange on 4 ranks here, against 26 us as
``Isend``/``Irecv`` and about as long through the collective). Every rank makes the same
exchanges in the same order, so MPI's non-overtaking rule pairs the messages. Buffers
travel as raw bytes: any dtype, no pickling.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict

import torch

from .. import runtime
from .allreduce import select_allreduce
from .base import Communicator
from .mpi_buffer import as_mpi_bytes
from .mpi_window import MPICounter, MPIModelWindow

_MPI_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "mean": "SUM"}


def p2p_bytes() -> int:
    """``MPIDEC_P2P_BYTES``: messages up to this size go point to point (default 64 KiB)."""
    env = os.environ.get("MPIDEC_P2P_BYTES", "").strip()
    try:
        return int(env) if env else 64 << 10
    except ValueError:
        raise ValueError(f"MPIDEC_P2P_BYTES={env!r} is not a whole number of bytes (gossip messages up to it "
                         "go as point-to-point requests, larger ones as one neighbourhood collective)") from None


P2P_BYTES = p2p_bytes()
MAX_PREPARED = 64  # small exchanges kept prepared (persistent requests) per communicator


def cuda_aware() -> bool:
    """Whether MPI can read GPU memory: ``MPIDEC_CUDA_AWARE=0/1`` overrides the library's answer."""
    env = os.environ.get("MPIDEC_CUDA_AWARE")
    if env in ("0", "1"):
        return env == "1"
    from mpi4py import MPI

    query = getattr(MPI, "Query_cuda_support", None)
    return bool(query()) if query is not None else False


def library_banner() -> str:
    """``MPI_Get_library_version()``: the MPI library in use, as it describes itself."""
    from mpi4py import MPI

    return MPI.Get_library_version().replace("\0", "").strip()  # Open MPI ends it with a NUL


def library_version() -> str:
    """The MPI library in use, in one line: 'Open MPI v4.1.4', 'MPICH 5.0.2', ..."""
    text = library_banner()
    banner = re.match(r"(\S+) Version:\s*(\S+)", text)  # MPICH, MVAPICH: a multi-line banner
    return " ".join(banner.groups()) if banner else text.splitlines()[0].split(",")[0].strip()


class MPICommunicator(Communicator):
    """This rank's communicator over ``MPI.COMM_WORLD`` (or ``comm``).

    ``allreduce``: 'auto' (Horovod when installed, MPI otherwise), 'horovod' or 'mpi'.
    ``max_graphs``: how many graph communicators to keep (least recently used go).
    """

    def __init__(self, comm=None, *, allreduce: str = "auto", max_graphs: int = 64):
        self.comm = comm if comm is not None else runtime.init()
        super().__init__(self.comm.Get_rank(), self.comm.Get_size(), cuda_aware())
        self._graphs: OrderedDict = OrderedDict()  # edge set -> graph communicator (LRU)
        self._specs: dict = {}                      # buffer -> mpi4py buffer spec
        self._max_graphs = max_graphs
        self._allreduce_choice = allreduce
        self._allreduce_backend = None
        self._p2p = None  # the private duplicate for small exchanges (made at the first one)
        self._prepared: OrderedDict = OrderedDict()  # (edges, buffers) -> _Prepared, least recently used first

    def graph_comm(self, topo):
        """The distributed-graph communicator of a static topology (collective on a miss)."""
        return self._graph_comm(self._plan(topo))

    def _graph_comm(self, plan):
        """Graph communicators by edge set, least recently used freed first.

        Every rank sees the same sequence of topologies, so hits, misses and evictions
        happen at the same calls on every rank, as the collective creation requires.
        """
        graph = self._graphs.get(plan.edges)
        if graph is not None:
            self._graphs.move_to_end(plan.edges)
            return graph
        graph = self.comm.Create_dist_graph_adjacent(plan.sources, plan.destinations, reorder=False)
        self._graphs[plan.edges] = graph
        if len(self._graphs) > self._max_graphs:
            self._graphs.popitem(last=False)[1].Free()
        return graph

    def _start_neighbor_allgather(self, plan, send, recv):
        if send.numel() * send.element_size() <= P2P_BYTES:
            return self._start_point_to_point(plan, send, recv)
        return self._graph_comm(plan).Ineighbor_allgather(self._spec(send), self._spec(recv, len(recv)))

    def _start_point_to_point(self, plan, send, recv):
        """The same exchange as one receive per in-neighbour into its row and one send per
        out-neighbour, prepared once per edge set and buffers as persistent requests
        (``MPI_Recv_init``, ``MPI_Send_init``; the pool hands the same buffers back step after
        step, so a step is one ``MPI_Startall``), on a private duplicate of the communicator
        (made at the first call: collective). At most ``MAX_PREPARED`` are kept."""
        key = (plan.edges, send.data_ptr(), recv.data_ptr(), send.numel() * send.element_size())
        exchange = self._prepared.pop(key, None)
        if exchange is None:
            if self._p2p is None:
                self._p2p = self.comm.Dup()
            comm = self._p2p  # the requests hold the buffers: no other tensor can take their addresses
            exchange = _Prepared([comm.Recv_init(as_mpi_bytes(recv[r]), source=j) for r, j in enumerate(plan.sources)]
                                 + [comm.Send_init(as_mpi_bytes(send), dest=j) for j in plan.destinations])
            if len(self._prepared) >= MAX_PREPARED:  # the least recently used that is not in flight goes
                idle = next((k for k, e in self._prepared.items() if not e.active), None)
                if idle is not None:
                    self._prepared.pop(idle).free()
        self._prepared[key] = exchange  # most recently used last
        exchange.start()
        return exchange

    def _spec(self, t: torch.Tensor, rows: int = 1):
        """``as_mpi_bytes``, cached: exchange buffers come back from the pool step after step."""
        key = (t.data_ptr(), t.numel(), t.dtype, rows)
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) > 1024:
                self._specs.clear()
            spec = self._specs[key] = as_mpi_bytes(t, rows)
        return spec

    def _start_allreduce(self, buf):
        if self._allreduce_backend is None:
            self._allreduce_backend = select_allreduce(self._allreduce_choice, self.comm)
        return self._allreduce_backend.start(buf)

    @property
    def allreduce_backend(self) -> str:
        """'horovod' or 'mpi' (chosen at the first allreduce)."""
        if self._allreduce_backend is None:
            self._allreduce_backend = select_allreduce(self._allreduce_choice, self.comm)
        return self._allreduce_backend.name

    def _start_alltoall(self, send, recv):
        return self.comm.Ialltoall(as_mpi_bytes(send, len(send)), as_mpi_bytes(recv, len(recv)))

    def _start_allgather(self, send, recv):
        return self.comm.Iallgather(as_mpi_bytes(send), as_mpi_bytes(recv, len(recv)))

    def allreduce_scalar(self, value, op="sum"):
        from mpi4py import MPI

        if op not in _MPI_OPS:
            raise ValueError(f"unknown reduction {op!r}; use one of {sorted(_MPI_OPS)}")
        total = self.comm.allreduce(float(value), op=getattr(MPI, _MPI_OPS[op]))
        return total / self.size if op == "mean" else total

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def model_window(self, tensors):
        return MPIModelWindow(self.comm, tensors)

    def counter(self, owner: int = 0):
        return MPICounter(self.comm, owner)


class _Prepared(list):
    """Persistent requests started and completed together."""

    active = False

    def start(self):
        from mpi4py import MPI

        MPI.Prequest.Startall(self)
        self.active = True

    def wait(self):
        from mpi4py import MPI

        MPI.Request.Waitall(self)
        self.active = False

    def free(self):
        for request in self:
            request.Free()
