"""Neighbour averaging against raw MPI and allreduce, same run, same bytes.

    mpiexec -n 4 python benchmarks/comm.py [--out results/comm.json] [--plot docs/figures/comm.png]

For each payload (float32, 1 KB to 100 MB) and each method, every rank times ``reps``
repetitions between barriers; the figure is the median over repetitions of the slowest
rank. Below 256 KB a repetition is several exchanges back to back, as in training,
timed as one and divided (20 at 1 KB: waking from a barrier with 4 ranks on 2 cores
takes longer than a 1 KB exchange). Methods:

- ``mpidec_ring``, ``mpidec_exponential``: ``MPICommunicator.neighbor_average``
  (sent from the tensor's memory: persistent point-to-point requests up to 64 KiB,
  ``Ineighbor_allgather`` above; the combine into the tensor);
- ``raw_ring``: mpi4py ``Isend``/``Irecv`` of the same bytes to the two ring neighbours
  plus a minimal three-term combine (``x*w0 + a*w1 + b*w2``): the baseline;
- ``mpi_allreduce``, ``horovod_allreduce``: the centralized alternative on the same buffer.

Also recorded: mpidec's extra memory per exchange (bytes of exchange buffers over the
payload; the target is at most in-degree + 1) and whether steady-state steps allocate.
"""

from __future__ import annotations

import argparse

import torch

import mpidec
from common import add_output_flags, finish, save, subplots
from mpidec import topology
from mpidec.comm import MPICommunicator
from timing import timed_together

PAYLOADS = [1 << 10, 16 << 10, 256 << 10, 4 << 20, 32 << 20, 100 << 20]


def raw_ring(world, x, recv, w):
    """The baseline: Isend/Irecv to both ring neighbours, then x <- w0 x + w1 a + w2 b."""
    from mpi4py import MPI

    n, r = world.Get_size(), world.Get_rank()
    left, right = (r - 1) % n, (r + 1) % n
    xs = x.numpy()
    reqs = [world.Irecv(recv[0].numpy(), source=left), world.Irecv(recv[1].numpy(), source=right),
            world.Isend(xs, dest=left), world.Isend(xs, dest=right)]
    MPI.Request.Waitall(reqs)
    x.mul_(w[0]).add_(recv[0], alpha=w[1]).add_(recv[1], alpha=w[2])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_output_flags(parser, "comm")
    parser.add_argument("--max-bytes", type=int, default=PAYLOADS[-1])
    args = parser.parse_args()

    world = mpidec.init()
    n, rank = world.Get_size(), world.Get_rank()
    ring, expo = topology.ring(n), topology.exponential(n)
    comm = MPICommunicator()
    mpi_comm = MPICommunicator(allreduce="mpi")
    w = ring.W[rank, [rank, (rank - 1) % n, (rank + 1) % n]].tolist()  # the raw ring's combine
    rows = []
    for nbytes in [p for p in PAYLOADS if p <= args.max_bytes]:
        numel = nbytes // 4
        reps = max(10, min(200, int(4e8 // max(nbytes, 1 << 16))))
        calls = max(1, min(20, (256 << 10) // nbytes))  # back to back, as in training: 20 at 1 KB
        x = torch.randn(numel)
        recv = torch.empty(2, numel)
        bytes_before = comm._pool.allocated_bytes
        comm.neighbor_average([x], ring)  # the ring's first exchange at this size makes its buffer
        ring_buffer_bytes = comm._pool.allocated_bytes - bytes_before
        methods = {"raw_ring": lambda: raw_ring(world, x, recv, w),
                   "mpidec_ring": lambda: comm.neighbor_average([x], ring),
                   "mpidec_exponential": lambda: comm.neighbor_average([x], expo),
                   "mpi_allreduce": lambda: mpi_comm.allreduce([x])}
        times = timed_together(world, methods, reps, baseline="raw_ring", calls=calls)
        row = {"bytes": nbytes, "reps": reps, "calls": calls, **{name: t for name, (t, _) in times.items()}}
        row["ratio_ring_vs_raw"] = times["mpidec_ring"][1]
        row["extra_us_ring_vs_raw"] = (row["mpidec_ring"] - row["raw_ring"]) * 1e6
        row["extra_memory_over_payload"] = ring_buffer_bytes / nbytes  # target: in-degree + 1 = 3
        before_steady = comm._pool.allocations
        for _ in range(3):
            comm.neighbor_average([x], ring)
        row["steady_state_allocations"] = comm._pool.allocations - before_steady
        rows.append(row)
        if rank == 0:
            print(f"{nbytes:>10} B  ring {row['mpidec_ring'] * 1e3:8.3f} ms  raw {row['raw_ring'] * 1e3:8.3f} ms  "
                  f"(x{row['ratio_ring_vs_raw']:.2f} median per-rep ratio, {row['extra_us_ring_vs_raw']:+.0f} us)  "
                  f"expo {row['mpidec_exponential'] * 1e3:8.3f} ms  mpi-allreduce {row['mpi_allreduce'] * 1e3:8.3f} ms",
                  flush=True)
    # Horovod last: once initialised, its background thread shares the 2 cores with every
    # method (1 KB exchanges took 1 ms instead of 0.1 with it running)
    if comm.allreduce_backend == "horovod":
        for row in rows:
            x, recv = torch.randn(row["bytes"] // 4), torch.empty(2, row["bytes"] // 4)
            times = timed_together(world, {"raw_ring": lambda: raw_ring(world, x, recv, w),
                                           "horovod_allreduce": lambda: comm.allreduce([x])},
                                   row["reps"], baseline="raw_ring", calls=row["calls"])
            row["horovod_allreduce"], row["raw_ring_beside_horovod"] = (times["horovod_allreduce"][0],
                                                                        times["raw_ring"][0])
            if rank == 0:
                print(f"{row['bytes']:>10} B  hvd {row['horovod_allreduce'] * 1e3:8.3f} ms  "
                      f"(raw ring beside it {row['raw_ring_beside_horovod'] * 1e3:8.3f} ms)", flush=True)
    if rank == 0:
        finish(args, {"ranks": n, "dtype": "float32", "pool_bytes": comm._pool.allocated_bytes, "rows": rows}, plot)


def plot(results, path):
    rows, n = results["rows"], results["ranks"]
    fig, ax = subplots(figsize=(7, 4.5))
    sizes = [r["bytes"] for r in rows]
    for key in ("mpidec_ring", "raw_ring", "mpidec_exponential", "mpi_allreduce", "horovod_allreduce"):
        if all(key in r for r in rows):
            ax.loglog(sizes, [r[key] * 1e3 for r in rows], marker="o", label=key)
    ax.set_xlabel("payload per rank (bytes)")
    ax.set_ylabel("time per exchange (ms, median of slowest rank)")
    ax.set_title(f"gossip vs allreduce, {n} ranks")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save(fig, path)


if __name__ == "__main__":
    main()
