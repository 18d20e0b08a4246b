"""Every rank stops at the same step boundary when any of them is asked to stop.

A stop request (:mod:`mpidec.signals`: SIGTERM, SIGINT, Open MPI's SIGCONT) may reach one
rank or all of them, at different moments. At each step boundary :meth:`Preemption.requested`
reduces the requests of all ranks (the max of one number), so every rank learns at the same
step that one of them was asked, writes its checkpoint there, and returns. The asynchronous
loop, which has no collective to reduce in, passes the request through its shared counter
(:mod:`mpidec.train.asynchronous`).
"""

from __future__ import annotations

import contextlib

from .. import signals


class Preemption:
    """``requested()``: whether any rank has received a stop request (collective)."""

    def __init__(self, comm):
        self.comm = comm

    def requested(self) -> bool:
        return self.comm.allreduce_scalar(1.0 if signals.requested() else 0.0, "max") > 0


@contextlib.contextmanager
def catching():
    """Stop signals become requests for the duration of a run (``mpidec train`` catches them
    for its whole process already); the run's request is forgotten at its end."""
    installed = signals.catch()
    try:
        yield
    finally:
        if installed:
            signals.release()
        signals.forget()
