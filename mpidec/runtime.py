"""MPI process hygiene: initialise once, never leave ranks blocked, tag output by rank.

Call :func:`init` on every rank at the top of every MPI program (``mpidec train`` and the
benchmarks do)::

    import mpidec
    comm = mpidec.init()      # MPI.COMM_WORLD (collective: every rank calls it)

After ``init`` no rank can leave the others waiting forever:

- an uncaught exception on any rank, in the main thread or another one, prints
  ``[rank r/n]`` and the traceback to stderr and calls ``MPI_Abort``, so the whole job
  ends at once instead of the other ranks waiting forever in a collective;
- a rank whose program ends early (the end of the script, ``sys.exit()``, a return from
  ``main``) tells every other rank, and waits at exit until they all end too. A rank
  whose main thread has been stuck in one call (a collective, a wait: the same Python
  line) for ``MPIDEC_EXIT_GRACE`` seconds (10) while a peer has left ends the job, naming
  the rank that left and why. A rank that goes on computing after a peer left is not stopped.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import traceback

EXIT_GRACE = float(os.environ.get("MPIDEC_EXIT_GRACE", "10"))
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID", "MV2_COMM_WORLD_RANK")

_installed = False
_exit_call: list = []  # [status, "file:line"] of the last sys.exit() call
_original_exit = sys.exit


def init():
    """Initialise MPI (once, through mpi4py) and install the abort and exit hooks (collective)."""
    global _installed
    from mpi4py import MPI  # importing mpi4py initialises MPI (thread level MULTIPLE)

    if not _installed and MPI.COMM_WORLD.Get_size() > 1:
        sys.excepthook = _abort_on_exception
        threading.excepthook = lambda args: _abort_on_exception(args.exc_type, args.exc_value, args.exc_traceback)
        sys.exit = _recording_exit
        if MPI.Query_thread() == MPI.THREAD_MULTIPLE:  # the watcher thread calls MPI beside the main one
            _ExitWatch(MPI.COMM_WORLD)
        _installed = True
    return MPI.COMM_WORLD


def launch_rank() -> int:
    """This process's rank as its launcher wrote it into the environment, without starting
    MPI (0 for a process started on its own)."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def rank_and_size() -> tuple[int, int]:
    """(rank, size) of the world; (0, 1) for a process started without mpiexec."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def node_rank_and_size(comm=None) -> tuple[int, int]:
    """(this rank's index among the ranks of ``comm`` on its node, how many they are)
    (collective over ``comm``, the world by default: ``MPI_COMM_TYPE_SHARED``)."""
    from mpi4py import MPI

    node = (comm or MPI.COMM_WORLD).Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


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


def _recording_exit(status=None):
    """``sys.exit``, remembering where it was called (for the exit notice)."""
    caller = sys._getframe(1)
    _exit_call[:] = [status, f"{caller.f_code.co_filename}:{caller.f_lineno}"]
    _original_exit(status)


def _exit_reason() -> str:
    if _exit_call:
        status, where = _exit_call
        return f"sys.exit({status!r}) at {where}"
    return "its program ended"


def _where(frame) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} ({frame.f_code.co_name})" if frame else "?"


class _ExitWatch:
    """Exit notices between ranks, on a private duplicate of the world communicator.

    Every rank posts one receive per peer at start. At exit (``atexit``, before mpi4py
    finalises MPI) a rank sends its notice to every peer and waits for all of theirs. A
    daemon thread looks at the main thread every 0.2 s (no MPI); when it has been in one
    call for ``EXIT_GRACE`` seconds, the thread tests the receives and, if a peer has left,
    ends the job.
    """

    TAG = 7

    def __init__(self, world):
        self.comm = world.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.peers = [k for k in range(self.size) if k != self.rank]
        self.pending = {k: self.comm.irecv(source=k, tag=self.TAG) for k in self.peers}
        self.left: dict[int, str] = {}  # rank -> reason, from the notices received
        self.exiting = False
        self.thread = threading.Thread(target=self._watch, name="mpidec-exit-watch", daemon=True)
        self.thread.start()
        atexit.register(self.leave)

    def _receive(self) -> None:
        for k, request in list(self.pending.items()):
            done, notice = request.test()
            if done:
                self.left[k] = notice
                del self.pending[k]

    def _watch(self) -> None:
        main = threading.main_thread().ident
        stuck_at, since = None, time.monotonic()  # the main thread's (frame, instruction), and since when
        while not self.exiting and self.pending:
            time.sleep(0.2)
            frame = sys._current_frames().get(main)
            position = (id(frame), frame.f_lasti if frame else None)
            if position != stuck_at:
                stuck_at, since = position, time.monotonic()
            elif time.monotonic() - since > EXIT_GRACE:
                # Only now MPI from this thread: calls beside the main thread's one-sided ones
                # crash Open MPI 4.1, and a main thread stuck this long is in a blocking call.
                self._receive()
                if self.left and not self.exiting:
                    self._abandoned(frame)
                since = time.monotonic()

    def _abandoned(self, frame) -> None:
        k, reason = next(iter(self.left.items()))
        abort(f"rank {k} left the job ({reason}) while this rank has waited {EXIT_GRACE:g} s in "
              f"{_where(frame)}, presumably for it: aborting the whole job (MPIDEC_EXIT_GRACE sets the wait)")

    def leave(self) -> None:
        """At exit: tell every peer, then wait until every peer's program has ended too."""
        from mpi4py import MPI

        if MPI.Is_finalized():
            return
        self.exiting = True
        self.thread.join()
        sends = [self.comm.isend(_exit_reason(), dest=k, tag=self.TAG) for k in self.peers]
        while self.pending:  # the peers still running; a peer that waits for us aborts the job
            self._receive()
            time.sleep(0.02)
        MPI.Request.Waitall(sends)
