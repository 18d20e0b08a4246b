"""Timing under MPI: the slowest rank decides how long a collective step took."""

from __future__ import annotations

import statistics
import time


def timed(world, fn, reps: int) -> float:
    """Median over ``reps`` runs of ``fn()`` (after one warm-up) of the slowest rank's seconds.

    Ranks start each run together (a barrier), so a rank's time includes waiting for the others.
    """
    from mpi4py import MPI

    fn()  # warm-up: graph communicators, buffers, Horovod's negotiation
    samples = []
    for _ in range(reps):
        world.Barrier()
        t0 = time.perf_counter()
        fn()
        samples.append(world.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    return statistics.median(samples)
