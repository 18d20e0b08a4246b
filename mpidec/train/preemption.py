"""Stop cleanly when the job is told to: SIGTERM (SLURM preemption, time limit, scancel).

The signal may reach one rank or all of them, at different moments. Its handler only
raises a flag; at each step boundary :meth:`Preemption.requested` reduces the flags of all
ranks (the max of a scalar), so every rank learns at the same step that one of them was
signalled, writes its checkpoint there, and returns.
"""

from __future__ import annotations

import signal


class Preemption:
    """Context manager: SIGTERM (and ``signals``) set a flag instead of killing the process."""

    def __init__(self, comm, signals=(signal.SIGTERM,)):
        self.comm, self.signals = comm, tuple(signals)
        self.signalled = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.signalled = True

    def __enter__(self) -> "Preemption":
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self) -> bool:
        """Whether any rank has been signalled (collective: every rank calls it at the same step)."""
        return self.comm.allreduce_scalar(float(self.signalled), "max") > 0
