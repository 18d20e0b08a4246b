"""MPI process hygiene: initialise once, never leave ranks blocked, tag output by rank.

Call :func:`init` at the top of every MPI program (``mpidec train`` and the benchmarks do)::

    import mpidec
    comm = mpidec.init()      # MPI.COMM_WORLD

After ``init`` an uncaught exception on any rank, in the main thread or another one,
prints ``[rank r/n]`` and the traceback to stderr and calls ``MPI_Abort``, so the whole
job ends at once instead of the other ranks waiting forever in a collective.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

_installed = False


def init():
    """Initialise MPI (once, through mpi4py) and install the abort-on-exception hooks."""
    global _installed
    from mpi4py import MPI  # importing mpi4py initialises MPI (thread level MULTIPLE)

    if not _installed and MPI.COMM_WORLD.Get_size() > 1:
        sys.excepthook = _abort_on_exception
        threading.excepthook = lambda args: _abort_on_exception(args.exc_type, args.exc_value, args.exc_traceback)
        _installed = True
    return MPI.COMM_WORLD


def rank_and_size() -> tuple[int, int]:
    """(rank, size) of the world; (0, 1) for a process started without mpiexec."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def rank_tag() -> str:
    rank, size = rank_and_size()
    return f"[rank {rank}/{size}]"


def rprint(*args, **kwargs) -> None:
    """``print`` prefixed with the rank, flushed (mpiexec interleaves lines of all ranks)."""
    print(rank_tag(), *args, **kwargs, flush=True)


def abort(message: str, code: int = 1) -> None:
    """Print ``message`` tagged with the rank and end every rank of the job."""
    from mpi4py import MPI

    sys.stderr.write(f"{rank_tag()} {message}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(0.5)  # let mpiexec forward this rank's output before it kills the job
    MPI.COMM_WORLD.Abort(code)
    os._exit(code)  # Abort does not return; this is for an MPI that ignores it


def _abort_on_exception(exc_type, exc_value, tb) -> None:
    text = "".join(traceback.format_exception(exc_type, exc_value, tb))
    abort(f"uncaught exception, aborting the whole job:\n{text}")
