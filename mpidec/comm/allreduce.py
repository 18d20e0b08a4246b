"""Allreduce for the centralized baseline: Horovod when installed, plain MPI otherwise.

Both start an in-place sum of one fused buffer and return a request with ``wait()``.
"""

from __future__ import annotations

import sys

import torch

_MPI_TYPES = {torch.float32: "FLOAT", torch.float64: "DOUBLE", torch.int32: "INT32_T", torch.int64: "INT64_T"}
_fallback_said = False


class HorovodAllreduce:
    """``hvd.allreduce_async_`` (Horovod's background thread, tensor fusion, response cache)."""

    name = "horovod"

    def __init__(self, comm):
        import horovod.torch as hvd

        if not hvd.is_initialized():
            hvd.init(comm=comm)
        self._hvd = hvd

    def start(self, buf: torch.Tensor):
        handle = self._hvd.allreduce_async_(buf, op=self._hvd.Sum)
        return _HorovodRequest(self._hvd, handle)


class _HorovodRequest:
    def __init__(self, hvd, handle):
        self._hvd, self._handle = hvd, handle

    def wait(self):
        self._hvd.synchronize(self._handle)


class MPIAllreduce:
    """``MPI_Iallreduce`` in place on the buffer's memory."""

    name = "mpi"

    def __init__(self, comm):
        self._comm = comm

    def start(self, buf: torch.Tensor):
        from mpi4py import MPI

        if buf.dtype not in _MPI_TYPES:
            raise TypeError(f"MPI allreduce supports {sorted(map(str, _MPI_TYPES))}, got {buf.dtype}; "
                            "cast the tensors or install Horovod")
        memory = buf if buf.is_cuda else buf.numpy()
        return self._comm.Iallreduce(MPI.IN_PLACE, [memory, getattr(MPI, _MPI_TYPES[buf.dtype])], op=MPI.SUM)


def select_allreduce(choice: str, comm):
    """'horovod', 'mpi', or 'auto': Horovod if it imports, else MPI (said once, on rank 0)."""
    global _fallback_said
    if choice not in ("auto", "horovod", "mpi"):
        raise ValueError(f"unknown allreduce backend {choice!r}; use 'auto', 'horovod' or 'mpi'")
    if choice == "mpi":
        return MPIAllreduce(comm)
    try:
        return HorovodAllreduce(comm)
    except ImportError as exc:
        if choice == "horovod":
            raise ImportError("Horovod is not installed: run jobs/setup.sh without MPIDEC_SKIP_HOROVOD") from exc
        if not _fallback_said and comm.Get_rank() == 0:
            print(f"mpidec: Horovod unavailable ({exc}); allreduce falls back to MPI_Iallreduce",
                  file=sys.stderr, flush=True)
        _fallback_said = True
        return MPIAllreduce(comm)
