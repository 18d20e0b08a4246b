"""The DecentLaM claim: at large batch, DmSGD falls behind PmSGD while DecentLaM stays close.

    python benchmarks/decentlam.py            (the in-process simulator, no MPI needed)

Heterogeneous logistic regression (benchmarks/problems.py) on 16 and 32 simulated workers. The
batch per worker grows and the learning rate grows with it (linear scaling, Goyal et al.);
momentum 0.9, a fixed number of steps. Reported: the excess global loss
``F(x_i) - F(x*)`` averaged over the workers' models (what each worker would deploy).
DmSGD's fixed point is biased by about lr / (1 - beta) times the data heterogeneity,
DecentLaM's by lr alone (ARCHITECTURE.md), so DmSGD's excess loss grows with the batch.
Writes benchmarks/results/decentlam.json and docs/figures/decentlam.png.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import add_output_flags, finish, save, subplots
from mpidec import optim, topology
from mpidec.comm import Simulator
from problems import HeterogeneousLogistic

ALGORITHMS = ("PmSGD", "DmSGD", "DecentLaM")


def run(problem, topo, algorithm, batch, lr, steps, seed):
    def make(params, comm):
        return optim.by_name(algorithm)(params, lr=lr, momentum=0.9, topology=topo, comm=comm,
                                        measure_consensus=False)

    results = Simulator(problem.n).run(problem.worker, make, steps, batch, seed)
    models = [w for w, _ in results]
    return float(np.mean([problem.global_loss(w) for w in models]) - problem.optimum_loss)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--topologies", nargs="+", default=["ring", "symmetric_exponential"])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--base-lr", type=float, default=0.02, help="learning rate at batch 8 (scaled linearly)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=1)
    add_output_flags(parser, "decentlam")
    args = parser.parse_args()

    rows, t0 = [], time.perf_counter()
    for n in args.nodes:
        problem = HeterogeneousLogistic(n, seed=n)
        for name in args.topologies:
            topo = topology.build(name, n)
            for batch in args.batches:
                lr = args.base_lr * batch / args.batches[0]
                row = {"nodes": n, "topology": name, "batch": batch, "lr": lr}
                for algorithm in ALGORITHMS:
                    row[algorithm] = float(np.mean([run(problem, topo, algorithm, batch, lr, args.steps, s)
                                                    for s in range(args.seeds)]))
                rows.append(row)
                print(f"n={n:3d} {name:12s} batch {batch:4d} lr {lr:.3f}  " +
                      "  ".join(f"{a} {row[a]:.2e}" for a in ALGORITHMS), flush=True)
    finish(args, {"steps": args.steps, "seeds": args.seeds, "momentum": 0.9,
                  "metric": "mean over workers of F(x_i) - F(x*)", "rows": rows,
                  "seconds": time.perf_counter() - t0}, plot)


def plot(results, path):
    rows = results["rows"]
    panels = sorted({(r["nodes"], r["topology"]) for r in rows})
    fig, axes = subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    for ax, (n, name) in zip(axes[0], panels):
        sub = [r for r in rows if (r["nodes"], r["topology"]) == (n, name)]
        for algorithm in ALGORITHMS:
            ax.semilogy([r["batch"] for r in sub], [r[algorithm] for r in sub], marker="o", label=algorithm)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{name}, {n} workers")
        ax.set_xlabel("batch per worker (lr scaled linearly)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("excess global loss")
    axes[0][0].legend()
    save(fig, path)


if __name__ == "__main__":
    main()
