"""Rank 0 averages with rank 1 while rank 1 sleeps outside MPI, without and with the
progress thread; prints how many averages completed meanwhile (run by test_adpsgd.py
under osc/ucx, a transport that needs the target to enter MPI)."""

import time

import torch

import mpidec
from mpidec.comm.mpi_window import MPIModelWindow

world = mpidec.init()
for progress in (0, 0.001):
    window = MPIModelWindow(world, [torch.zeros(1 << 16)], progress=progress)
    world.Barrier()
    if world.Get_rank() == 1:
        time.sleep(1.5)
    elif world.Get_rank() == 0:
        time.sleep(0.2)  # rank 1 has left MPI
        done, end = 0, time.perf_counter() + 1.0
        while time.perf_counter() < end:
            window.average_with(1)
            done += 1
        print(f"progress {progress:g} s: {done} averages while the target slept", flush=True)
    world.Barrier()
    window.free()
