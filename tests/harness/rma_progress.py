"""One rank works on another's memory while that one is outside MPI, without and with the
progress thread: rank 0 averages with rank 1's model, then rank 1 adds to the counter that
rank 0 owns. Prints how many operations completed in one second.

    mpiexec -n 2 python tests/harness/rma_progress.py [--busy] [--progress 0,0.001] [--numel 65536]

The target sleeps (default) or computes (``--busy``: a Python loop that never calls MPI).
test_adpsgd.py runs it under settings where the transport needs the target to enter MPI,
as across nodes; docs/adpsgd.md quotes it on one node for each MPI.
"""

import argparse
import time

import torch

import mpidec
from mpidec.comm.mpi_window import MPICounter, MPIModelWindow


def outside_mpi(seconds: float, busy: bool) -> None:
    if not busy:
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def while_target_is_away(world, target, origin, operation, busy) -> int:
    """Collective: the operations ``origin`` completes in 1 s while ``target`` is outside MPI."""
    world.Barrier()
    done = 0
    if world.Get_rank() == target:
        outside_mpi(1.5, busy)
    elif world.Get_rank() != origin:
        time.sleep(1.5)  # not spinning in the Barrier below: the two at work get the cores
    else:
        time.sleep(0.2)  # the target has left MPI
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            operation()
            done += 1
    world.Barrier()
    return done


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--busy", action="store_true", help="the target computes instead of sleeping")
    parser.add_argument("--progress", default="0,0.001", help="progress-thread intervals to try (s)")
    parser.add_argument("--numel", type=int, default=1 << 16, help="float32 elements of the model")
    args = parser.parse_args()
    world = mpidec.init()
    away = "computed" if args.busy else "slept"
    for progress in map(float, args.progress.split(",")):
        window = MPIModelWindow(world, [torch.zeros(args.numel)], progress=progress)
        averages = while_target_is_away(world, 1, 0, lambda: window.average_with(1), args.busy)
        window.free()
        counter = MPICounter(world, progress=progress)
        adds = while_target_is_away(world, 0, 1, lambda: counter.add(1), args.busy)
        counter.free()
        if world.Get_rank() == 0:
            print(f"progress {progress:g} s: {averages} averages while the target {away}", flush=True)
        if world.Get_rank() == 1:
            print(f"progress {progress:g} s: {adds} counter adds while its owner {away}", flush=True)


if __name__ == "__main__":
    main()
