"""Stop requests: SIGTERM, SIGINT and Open MPI's launcher signals become a flag, never a kill.

A training process is stopped by signals from several senders, at any moment:

- SLURM (time limit, ``scancel``, preemption), ``kill`` and ``srun`` send SIGTERM (or,
  after Ctrl-C twice, SIGINT) to the ranks themselves; SIGKILL follows after KillWait (30 s);
- Ctrl-C sends SIGINT to the foreground process: a single process, or the launcher;
- Open MPI's ``mpiexec``/``mpirun``, when it is signalled itself (Ctrl-C, ``timeout``, a
  batch system), does not forward SIGTERM: it sends every rank SIGCONT at once, SIGTERM
  ``odls_base_sigkill_timeout`` seconds later (T, default 1) and SIGKILL after another T
  (Open MPI 4.1 ``orte_odls_base_default_kill_local_procs``; PRRTE does the same). The
  ranks live in their own process groups, so Ctrl-C and ``timeout`` reach only mpiexec.

:func:`catch` turns SIGTERM and SIGINT into a stop request, and, in a process launched by
Open MPI, SIGCONT too: it is the launcher's first word, T seconds before its SIGTERM, so
the ranks start their checkpoint at once and have 2T to finish it. A SIGCONT that resumes
a stopped process (Ctrl-Z then ``fg`` forwarded by mpiexec, ``scontrol suspend``/``resume``)
is not a request: a clock thread ticks every 0.25 s, and a gap of over 2 s among its
recent ticks means the process was stopped. (The rare misreading of either kind is safe:
a resumed job that checkpoints and stops, or a stop noticed T seconds later at SIGTERM.)

The handlers only record the request: :func:`requested` says whether one came, and the
training loop acts on it at its next step boundary (:mod:`mpidec.train.preemption`).
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOPPED_GAP = 2.0  # seconds without a clock tick: the process was stopped (SIGSTOP) meanwhile

_request: list = []   # [description, monotonic time] of the first stop request
_previous: dict = {}  # signal -> the handler before catch()
_ticks: collections.deque = collections.deque(maxlen=40)  # the clock thread's last 10 s


def launched_by_open_mpi() -> bool:
    """Whether Open MPI's mpiexec/mpirun (or its daemon) started this process."""
    return "OMPI_COMM_WORLD_SIZE" in os.environ


def launcher_grace() -> float | None:
    """Seconds between Open MPI's first signal to a rank and its SIGKILL (2T), or None when
    the launcher is not Open MPI's (srun: KillWait, 30 s by default)."""
    if not launched_by_open_mpi():
        return None
    value = os.environ.get("OMPI_MCA_odls_base_sigkill_timeout") or os.environ.get(
        "PRTE_MCA_odls_base_sigkill_timeout") or "1"
    try:
        return 2 * float(value)
    except ValueError:
        return 2.0


def catch() -> bool:
    """Install the handlers (main thread only; idempotent). Returns whether this call did."""
    if _previous or threading.current_thread() is not threading.main_thread():
        return False
    for sig in STOP_SIGNALS:
        _previous[sig] = signal.signal(sig, _on_stop_signal)
    if launched_by_open_mpi():
        _previous[signal.SIGCONT] = signal.signal(signal.SIGCONT, _on_continue)
        if not _ticks:  # one clock per process, started by the first catch()
            _ticks.append(time.monotonic())
            threading.Thread(target=_clock, name="mpidec-stop-clock", daemon=True).start()
    return True


def release() -> None:
    """Put back the handlers :func:`catch` replaced (the request, if any, is kept)."""
    for sig, handler in _previous.items():
        signal.signal(sig, handler)
    _previous.clear()


def requested() -> str | None:
    """The first stop request received by this process, described, or None."""
    return _request[0] if _request else None


def forget() -> None:
    """Clear the request (a new run in the same process starts without one)."""
    _request.clear()


def request(description: str) -> None:
    if not _request:
        _request[:] = [description, time.monotonic()]


def _on_stop_signal(signum, frame) -> None:
    request(signal.Signals(signum).name)


def _on_continue(signum, frame) -> None:
    if not _was_stopped():
        request("SIGCONT from Open MPI's launcher (mpiexec was signalled)")


def _clock() -> None:
    while True:
        _ticks.append(time.monotonic())
        time.sleep(0.25)


def _was_stopped() -> bool:
    """Whether the clock thread's recent ticks (and now) show a gap: the process was stopped."""
    times = [*_ticks, time.monotonic()]
    return any(later - earlier > STOPPED_GAP for earlier, later in zip(times, times[1:]))
