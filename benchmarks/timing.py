"""Timing under MPI: the slowest rank decides how long a collective step took.

On an oversubscribed machine (4 ranks on 2 cores) speed drifts by tens of percent over
seconds, so methods compared with each other are timed interleaved: each repetition runs
every method once, in a rotating order, and ratios are taken within a repetition.
"""

from __future__ import annotations

import statistics
import time


def _once(world, fn, calls: int = 1) -> float:
    from mpi4py import MPI

    world.Barrier()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return world.allreduce((time.perf_counter() - t0) / calls, op=MPI.MAX)


def timed_together(world, methods: dict, reps: int, baseline: str, calls: int = 1) -> dict:
    """``{name: (median seconds, median ratio to the baseline within a repetition)}``.

    Every method runs once first as a warm-up (graph communicators, buffers, Horovod's
    negotiation). Ranks start each run together (a barrier), so a rank's time includes
    waiting for the others. ``calls``: back-to-back calls per run, timed as one and
    divided (for operations of tens of microseconds, where waking from the barrier on an
    oversubscribed machine takes longer than the operation).
    """
    names = list(methods)
    for name in names:
        methods[name]()
    samples = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            samples[name].append(_once(world, methods[name], calls))
    return {name: (statistics.median(samples[name]),
                   statistics.median(a / b for a, b in zip(samples[name], samples[baseline])))
            for name in names}
