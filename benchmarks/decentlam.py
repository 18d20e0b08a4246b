"""The DecentLaM claim: at large batch, DmSGD falls behind PmSGD while DecentLaM stays close;
and the algorithms beyond symmetric graphs and one-step methods (issue 19) on the same data.

    python benchmarks/decentlam.py                              (the in-process simulator, no MPI needed)
    python benchmarks/decentlam.py --nodes 32 --topologies ring   (a part: the other rows are kept)

Heterogeneous logistic regression (benchmarks/problems.py) on 16 and 32 simulated workers. The
batch per worker grows and the learning rate grows with it (linear scaling, Goyal et al.);
momentum 0.9, a fixed number of steps. Reported: the excess global loss
``F(x_i) - F(x*)`` averaged over the workers' models (what each worker would deploy), and
the bytes each worker sent per step, counted at the transport (the optimizers' bytes_sent).
DmSGD's fixed point is biased by about lr / (1 - beta) times the data heterogeneity,
DecentLaM's by lr alone (docs/algorithms.md), so DmSGD's excess loss grows with the batch.
Issue 19's columns: GT (gradient tracking), SGP and OSGP (push-sum, OSGP's messages one step
late), DiLoCo (local steps, an outer Nesterov step on the allreduced change every 10
steps); the topologies gain the one-peer exponential graph and random push (directed, a
random peer per step: column-stochastic, push-sum only). An algorithm that refuses a
topology has no number there; PmSGD and DiLoCo use none (run once per batch). Each run
updates its (workers, topology, batch) rows of benchmarks/results/decentlam.json;
docs/figures/decentlam.png shows them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import add_output_flags, finish, previous, save, subplots
from mpidec import optim, topology
from mpidec.comm import Simulator
from problems import HeterogeneousLogistic

ALGORITHMS = ("PmSGD", "DmSGD", "DecentLaM", "GT", "SGP", "OSGP", "DiLoCo")
OPTIONS = {"DiLoCo": {"period": 10}, "OSGP": {"delay": 1}}
TOPOLOGIES = ("ring", "symmetric_exponential", "one_peer_exponential", "random_push")


def build_topology(name, n):
    """``topology.build(name, n)``, and ``random_push`` (column-stochastic: push-sum only), seed 0."""
    return topology.random_push(n, seed=0) if name == "random_push" else topology.build(name, n)


def run(problem, topo, algorithm, batch, lr, steps, seed):
    """(excess loss, bytes per worker per step), or None where ``algorithm`` refuses ``topo``."""
    opts = {}

    def make(params, comm):
        opt = optim.by_name(algorithm)(params, lr=lr, momentum=0.9, topology=topo, comm=comm,
                                       measure_consensus=False, **OPTIONS.get(algorithm, {}))
        opts[comm.rank] = opt
        return opt

    try:
        results = Simulator(problem.n).run(problem.worker, make, steps, batch, seed)
    except RuntimeError as exc:
        if isinstance(exc.__cause__, topology.TopologyError):
            return None
        raise
    models = [w for w, _ in results]
    return (float(np.mean([problem.global_loss(w) for w in models]) - problem.optimum_loss),
            float(np.mean([opt.bytes_sent for opt in opts.values()])) / steps)


def uses_topology(algorithm) -> bool:
    return optim.by_name(algorithm).exchange != "allreduce"


def rows_for(n, names, batches, base_lr, steps, seeds) -> list:
    problem, rows, shared = HeterogeneousLogistic(n, seed=n), [], {}
    for name in names:
        topo = build_topology(name, n)
        for batch in batches:
            lr = base_lr * batch / 8
            row = {"nodes": n, "topology": name, "batch": batch, "lr": lr, "bytes_per_step": {}}
            for algorithm in ALGORITHMS:
                key = (algorithm, batch) if not uses_topology(algorithm) else (algorithm, batch, name)
                if key not in shared:
                    runs = [run(problem, topo, algorithm, batch, lr, steps, s) for s in range(seeds)]
                    shared[key] = None if runs[0] is None else tuple(np.mean(runs, axis=0))
                loss, sent = shared[key] if shared[key] is not None else (None, None)
                row[algorithm], row["bytes_per_step"][algorithm] = loss, sent
            rows.append(row)
            print(f"n={n:3d} {name:21s} batch {batch:4d} lr {lr:.3f}  " +
                  "  ".join(f"{a} {row[a]:.2e}" for a in ALGORITHMS if row[a] is not None), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES), choices=TOPOLOGIES)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--base-lr", type=float, default=0.02, help="learning rate at batch 8 (scaled linearly)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=1)
    add_output_flags(parser, "decentlam")
    args = parser.parse_args()

    t0 = time.perf_counter()
    rows = [row for n in args.nodes for row in rows_for(n, args.topologies, args.batches, args.base_lr, args.steps,
                                                         args.seeds)]
    settings = {"steps": args.steps, "seeds": args.seeds, "momentum": 0.9, "base_lr": args.base_lr,
                "options": OPTIONS, "metric": "mean over workers of F(x_i) - F(x*)"}
    results = previous(args.out)
    done = {(r["nodes"], r["topology"], r["batch"]) for r in rows}
    kept = [r for r in results.get("rows", []) if (r["nodes"], r["topology"], r["batch"]) not in done
            and "bytes_per_step" in r] if all(results.get(k) == v for k, v in settings.items()) else []
    order = {name: i for i, name in enumerate(TOPOLOGIES)}
    rows = sorted(kept + rows, key=lambda r: (r["nodes"], order[r["topology"]], r["batch"]))
    finish(args, {**settings, "rows": rows, "seconds": time.perf_counter() - t0}, plot)


def plot(results, path):
    rows = results["rows"]
    nodes = sorted({r["nodes"] for r in rows})
    names = [name for name in TOPOLOGIES if any(r["topology"] == name for r in rows)]
    fig, axes = subplots(len(nodes), len(names), figsize=(4 * len(names), 3.6 * len(nodes)), squeeze=False)
    for i, n in enumerate(nodes):
        for ax, name in zip(axes[i], names):
            sub = [r for r in rows if (r["nodes"], r["topology"]) == (n, name)]
            for k, algorithm in enumerate(ALGORITHMS):
                points = [(r["batch"], r[algorithm]) for r in sub if r.get(algorithm) is not None]
                if points:                  # push-sum dashed, SGP hollow: SGP = DmSGD on doubly stochastic graphs
                    ax.semilogy(*zip(*points), marker="o", color=f"C{k}", label=algorithm,
                                ls="--" if algorithm in ("SGP", "OSGP") else "-",
                                mfc="none" if algorithm == "SGP" else None)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{name}, {n} workers")
            ax.set_xlabel("batch per worker (lr scaled linearly)")
            ax.grid(True, which="both", alpha=0.3)
        axes[i][0].set_ylabel("excess global loss")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


if __name__ == "__main__":
    main()
