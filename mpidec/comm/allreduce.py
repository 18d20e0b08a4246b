"""Allreduce for the centralized baseline: Horovod when it can run here, plain MPI otherwise.

Both start an in-place sum of one fused buffer and return a request with ``wait()``.
Horovod is compiled against one MPI library; loaded beside another (an ``mpich`` job with a
Horovod built for Open MPI) it aborts the job inside ``MPI_Comm_dup``. So 'auto' checks,
before importing it, that the MPI libraries Horovod's extension needs belong to the MPI this
process has loaded (:func:`horovod_unusable`), and ``MPIDEC_SKIP_HOROVOD=1`` turns Horovod off
at run time (as it does in ``jobs/setup.sh``); either way the job says once why it
allreduces with MPI.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
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
    """'horovod', 'mpi', or 'auto': Horovod if it can run here, else MPI (said once, on rank 0)."""
    global _fallback_said
    if choice not in ("auto", "horovod", "mpi"):
        raise ValueError(f"unknown allreduce backend {choice!r}; use 'auto', 'horovod' or 'mpi'")
    if choice == "mpi":
        return MPIAllreduce(comm)
    reason = horovod_unusable()
    if reason is None:
        try:
            return HorovodAllreduce(comm)
        except ImportError as exc:
            reason = f"Horovod does not load ({exc}): jobs/setup.sh builds it for the MPI in use"
    if choice == "horovod":
        raise ImportError(f"allreduce='horovod', but {reason}")
    if not _fallback_said and comm.Get_rank() == 0:
        print(f"mpidec: {reason}: allreduce falls back to MPI_Iallreduce", file=sys.stderr, flush=True)
    _fallback_said = True
    return MPIAllreduce(comm)


def horovod_unusable() -> str | None:
    """Why Horovod must not be loaded in this process, or None (without importing it).

    Every MPI library Horovod's extension needs (``libmpi.so.40``, ``libmpi_cxx.so.40``, ...)
    must be one of the MPI in use: a file of that name beside the ``libmpi`` this process
    has loaded. An Open MPI 4 build needs ``libmpi_cxx.so.40``, which Open MPI 5 lacks;
    under MPICH (``libmpi.so.12``) it needs a ``libmpi.so.40`` there is none of.
    """
    if os.environ.get("MPIDEC_SKIP_HOROVOD", "0") not in ("", "0"):
        return "Horovod is switched off (MPIDEC_SKIP_HOROVOD=1)"
    spec = importlib.util.find_spec("horovod")
    if spec is None or not spec.submodule_search_locations:
        return "Horovod is not installed (jobs/setup.sh builds it unless MPIDEC_SKIP_HOROVOD=1)"
    needed = set()
    for lib in glob.glob(os.path.join(spec.submodule_search_locations[0], "torch", "mpi_lib*.so")):
        with open(lib, "rb") as f:
            needed.update(_mpi_sonames(f.read()))
    loaded = loaded_mpi_library()
    missing = sorted(n for n in needed if loaded and not os.path.exists(os.path.join(os.path.dirname(loaded), n)))
    if missing:
        return (f"Horovod was built against another MPI ({', '.join(missing)}, not in "
                f"{os.path.dirname(loaded)}, where this job's {os.path.basename(loaded)} is): "
                "rebuild it with jobs/setup.sh under this MPI")
    return None


def loaded_mpi_library() -> str | None:
    """The path of the ``libmpi`` mapped into this process (None where /proc is missing)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            maps = f.read()
    except OSError:
        return None
    found = re.search(rb"(/\S*/libmpi(?:_cray)?\.so\.\d+)\S*", maps)
    return found.group(0).decode() if found else None


def _mpi_sonames(blob: bytes) -> set[str]:
    """The MPI library sonames named in ``blob``: ``libmpi.so.40`` (Open MPI), ``libmpi.so.12``
    (MPICH, Intel MPI, MVAPICH), ``libmpi_cray.so.12`` (Cray MPICH), ``libmpi_cxx.so.40``, ..."""
    return {m.decode() for m in re.findall(rb"\blibmpi(?:_\w+)?\.so\.\d+", blob)}
