"""A short 4-rank check that MPI, mpi4py, torch and Horovod work together.

    mpiexec -n 4 python -m mpidec.selfcheck

Each rank gossips over a ring with mpidec's communicator, allreduces with Horovod (or
MPI), and prints one line: the versions and both results checked against closed forms. Rank 0
first prints the MPI library's own banner (``MPI_Get_library_version``), once.
"""

import torch

import mpidec
from mpidec import topology
from mpidec.comm import MPICommunicator
from mpidec.comm.mpi import library_banner, library_version


def main():
    world = mpidec.init()
    from mpi4py import __version__ as mpi4py_version

    if world.Get_rank() == 0:
        banner = "\n".join("    " + line.rstrip() for line in library_banner().splitlines())
        print(f"MPI library:\n{banner}", flush=True)
    world.Barrier()
    comm = MPICommunicator()
    n, r = comm.size, comm.rank
    ring = topology.ring(n)
    x = [torch.full((4,), float(r), dtype=torch.float64)]
    comm.neighbor_average(x, ring)
    want = sum(float(j) * w for j, w in enumerate(ring.W[r]))
    y = [torch.full((4,), float(r), dtype=torch.float64)]
    comm.allreduce(y)
    ok = torch.allclose(x[0], torch.full((4,), want, dtype=torch.float64)) and y[0][0].item() == (n - 1) / 2
    mpidec.rprint(f"{library_version()}, mpi4py {mpi4py_version}, torch {torch.__version__}, allreduce via "
                  f"{comm.allreduce_backend}: ring average {x[0][0].item():.4f} (want {want:.4f}), "
                  f"mean of ranks {y[0][0].item():.2f} -> {'OK' if ok else 'WRONG'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
