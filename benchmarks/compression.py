"""Compressed gossip: test accuracy against bytes sent, on scikit-learn's digits.

    python benchmarks/compression.py                                  # 16 simulated workers, ring
    mpiexec --bind-to none -n 4 python benchmarks/compression.py --mpi  # 4 MPI ranks, ring

The setup of benchmarks/consensus.py (benchmarks/digits.py): a 64-32-10 MLP, the training digits label-sorted
across the workers (each sees one or two classes), momentum 0.9, batch 32, two
learning-rate phases. Rows: DSGD, DSGD with a bfloat16 wire, CHOCO-SGD with top-k at 10%
and 1%, scaled sign and stochastic int8, SignumMV (1-bit majority vote) and PmSGD (the
allreduce reference). Reported: test accuracy of the workers' average model, the mean of
the workers' own accuracies, and the bytes each worker sent per step as counted at the
transport primitives (the optimizer's ``bytes_sent``: each call's send buffer times its
destinations, out-degree for a neighbour gather, n - 1 for an allgather, (n - 1)/n for an
all-to-all, 2 (n - 1)/n for an allreduce as a ring does it). Each mode updates its part of
benchmarks/results/compression.json; the plot docs/figures/compression.png shows both.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import add_output_flags, finish, previous, save, subplots
from digits import accuracies, data, model, model_bytes, train
from mpidec import optim, topology
from mpidec.comm import Simulator

# label -> (algorithm, options, learning rates of the two phases)
ROWS = {
    "DSGD": ("DSGD", {}, (0.1, 0.01)),
    "DSGD, bf16 wire": ("DSGD", {"wire_dtype": torch.bfloat16}, (0.1, 0.01)),
    "CHOCO top-k 10%, gamma 0.4": ("CHOCO", {"compressor": "top_k", "ratio": 0.1, "gamma": 0.4}, (0.1, 0.01)),
    "CHOCO top-k 1%, gamma 0.1": ("CHOCO", {"compressor": "top_k", "ratio": 0.01, "gamma": 0.1}, (0.1, 0.01)),
    "CHOCO sign, gamma 0.5": ("CHOCO", {"compressor": "sign", "gamma": 0.5}, (0.1, 0.01)),
    "CHOCO int8, gamma 0.8": ("CHOCO", {"compressor": "int8", "gamma": 0.8}, (0.1, 0.01)),
    "SignumMV": ("SignumMV", {}, (0.01, 0.001)),
    "PmSGD (allreduce)": ("PmSGD", {}, (0.1, 0.01)),
}


def worker(comm, shards, test, label, steps, batch=32):
    algorithm, options, lrs = ROWS[label]
    net = model()
    opt = optim.by_name(algorithm)(net.parameters(), lr=lrs[0], momentum=0.9, topology=topology.ring(comm.size),
                                   comm=comm, **options)
    train(opt, net, shards[comm.rank], comm.rank, lrs, steps, batch)
    averaged, own = accuracies(net, test, comm)
    return {"avg_model_accuracy": averaged, "own_accuracy": own, "bytes_per_step": opt.bytes_sent / steps}


def summarise(results: list) -> dict:
    return {"avg_model_accuracy": results[0]["avg_model_accuracy"],
            "mean_worker_accuracy": float(np.mean([r["own_accuracy"] for r in results])),
            "bytes_per_worker_step": float(np.mean([r["bytes_per_step"] for r in results])),
            "model_bytes": model_bytes()}


def run_simulated(n, steps, labels):
    shards, test = data(n)
    rows = {}
    for label in labels:
        results = Simulator(n).run(worker, shards, test, label, steps)
        rows[label] = summarise(results)
        report(label, rows[label])
    return rows


def run_mpi(steps, labels):
    from mpidec.comm import MPICommunicator

    comm = MPICommunicator()
    shards, test = data(comm.size)
    rows = {}
    for label in labels:
        mine = worker(comm, shards, test, label, steps)
        results = comm.allgather_object(mine)
        rows[label] = summarise(results)
        if comm.rank == 0:
            report(label, rows[label])
    return rows if comm.rank == 0 else None


def report(label, r):
    print(f"{label:28s} avg-model acc {r['avg_model_accuracy']:.3f}  worker acc {r['mean_worker_accuracy']:.3f}  "
          f"{r['bytes_per_worker_step']:9.0f} B/step ({r['bytes_per_worker_step'] / r['model_bytes']:.3f} models)",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mpi", action="store_true", help="run on the MPI ranks (under mpiexec) instead of simulated")
    parser.add_argument("--nodes", type=int, default=16, help="simulated workers")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), metavar="LABEL",
                        help="labels to (re)run (quoted: they hold spaces and commas); the others are kept")
    add_output_flags(parser, "compression")
    args = parser.parse_args()
    labels = args.rows
    unknown = sorted(set(labels) - set(ROWS))
    if unknown:
        parser.error(f"--rows: unknown row {unknown[0]!r}; rows: {', '.join(map(repr, ROWS))}")
    t0 = time.perf_counter()
    rows = run_mpi(args.steps, labels) if args.mpi else run_simulated(args.nodes, args.steps, labels)
    if rows is None:
        return
    results = previous(args.out)
    key = "mpi_4_ranks" if args.mpi else f"simulated_{args.nodes}_workers"
    kept = results.get(key, {}).get("rows", {}) if results.get(key, {}).get("steps") == args.steps else {}
    results[key] = {"steps": args.steps, "rows": {label: rows.get(label, kept.get(label)) for label in ROWS
                                                  if label in rows or label in kept},
                    "seconds": time.perf_counter() - t0}
    finish(args, results, plot)


def plot(results, path):
    fig, axes = subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (key, run) in zip(axes[0], sorted(results.items())):
        for label, r in run["rows"].items():
            ax.scatter(r["bytes_per_worker_step"], r["avg_model_accuracy"])
            ax.annotate(label, (r["bytes_per_worker_step"], r["avg_model_accuracy"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("bytes sent per worker per step")
        ax.set_ylabel("test accuracy (average model)")
        ax.set_title(key.replace("_", " "))
    save(fig, path)


if __name__ == "__main__":
    main()
