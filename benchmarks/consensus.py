"""Kong et al. 2021 on a small problem: control consensus in the first phase only; and the
algorithms beyond symmetric graphs and one-step methods (issue 19) on the same data.

    python benchmarks/consensus.py                 (the in-process simulator, no MPI needed)
    python benchmarks/consensus.py --nodes 32 --rows "ring, GT" ...   (some rows; the others are kept)

16 (or ``--nodes``) simulated workers train a small MLP on scikit-learn's digits,
label-sorted across the workers (each sees one or two classes), momentum 0.9, batch 32,
learning rate 0.1 then 0.01 (benchmarks/digits.py). Rows: centralized (PmSGD, allreduce),
DmSGD on a ring without control, DmSGD on the ring with consensus controlled to 1/2 and
1/4 of the uncontrolled run's distance at each step, and 1/4 in the first phase only
(control compares the cheap estimate of each gossip round's input with the target); then
gradient tracking (GT) on the ring, SGP and OSGP (delay 1) on the one-peer exponential
graph and on random push (directed, a random peer per step), and DiLoCo (allreduce every
10 steps, its default outer Nesterov step). Reported: test accuracy of the workers'
average model and the mean of the workers' own accuracies, the mean exact consensus
distance of the models per phase, and the bytes each worker sent per step as counted at
the transport (benchmarks/compression.py's count: the consensus measurements themselves
are not counted), also in model-sized messages (a ring gossip round sends 2, a ring
allreduce 2 (n - 1) / n). Each node count updates its part of
benchmarks/results/consensus.json; docs/figures/consensus.png shows them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import add_output_flags, finish, previous, save, subplots
from digits import accuracies, data, model, model_bytes, train
from mpidec import optim, topology
from mpidec.comm import Simulator
from mpidec.consensus import ConsensusControl, exact_distance

LRS = (0.1, 0.01)
# label -> (algorithm, topology, options)
ALGORITHMS = {
    "centralized (PmSGD)": ("PmSGD", "ring", {}),
    "ring, no control": ("DmSGD", "ring", {}),
    "ring, GT": ("GT", "ring", {}),
    "one-peer exponential, SGP": ("SGP", "one_peer_exponential", {}),
    "one-peer exponential, OSGP (delay 1)": ("OSGP", "one_peer_exponential", {"delay": 1}),
    "random push, SGP": ("SGP", "random_push", {}),
    "random push, OSGP (delay 1)": ("OSGP", "random_push", {"delay": 1}),
    "DiLoCo (period 10)": ("DiLoCo", "ring", {"period": 10}),
}
# label -> (target: factor of the uncontrolled ring's distance, fraction of the steps controlled); DmSGD, ring
CONTROLS = {"ring, control 1/2": (0.5, 1.0), "ring, control 1/4": (0.25, 1.0), "ring, 1/4 in phase 1 only": (0.25, 0.5)}
ROWS = [*list(ALGORITHMS)[:2], *CONTROLS, *list(ALGORITHMS)[2:]]


def build_topology(name, n):
    """``topology.build(name, n)``, and ``random_push`` (column-stochastic: push-sum only), seed 0."""
    return topology.random_push(n, seed=0) if name == "random_push" else topology.build(name, n)


def worker(comm, shards, test, label, steps, control, distances):
    algorithm, graph, options = ALGORITHMS.get(label, ALGORITHMS["ring, no control"])
    net = model()
    opt = optim.by_name(algorithm)(net.parameters(), lr=LRS[0], momentum=0.9, topology=build_topology(graph, comm.size),
                                   comm=comm, **options, **({"consensus_control": control} if control else {}))
    rounds = [0]

    def measure(step):                                                # between steps: not in opt.bytes_sent
        rounds[0] += opt.last_gossip_rounds
        estimate = opt.consensus_estimate()                           # the gossip input's (controlled)
        exact = exact_distance(list(net.parameters()), comm)          # the models' (reported)
        if comm.rank == 0:
            distances.append((estimate or 0.0, exact))

    train(opt, net, shards[comm.rank], comm.rank, LRS, steps, 32, measure)
    return (*accuracies(net, test, comm), rounds[0], opt.bytes_sent / steps)


def run(n, shards, test, label, steps, control=None):
    distances = []
    results = Simulator(n).run(worker, shards, test, label, steps, control, distances)
    half, per_step = steps // 2, float(np.mean([r[3] for r in results]))
    return {"avg_model_accuracy": results[0][0], "mean_worker_accuracy": float(np.mean([r[1] for r in results])),
            "bytes_per_worker_step": per_step, "messages_per_worker": per_step * steps / model_bytes(),
            "gossip_rounds": results[0][2],
            "consensus_phase1": float(np.mean([d for _, d in distances[:half]])),
            "consensus_phase2": float(np.mean([d for _, d in distances[half:]])),
            "distances": distances}


def run_rows(n, steps, labels) -> dict:
    """The rows ``labels`` (and the uncontrolled ring, whose distances the controls target)."""
    shards, test = data(n)
    rows = {}
    if any(label in CONTROLS for label in labels) or "ring, no control" in labels:
        rows["ring, no control"] = run(n, shards, test, "ring, no control", steps)
        reference = [estimate for estimate, _ in rows["ring, no control"]["distances"]]
    for label in labels:
        if label in CONTROLS:
            factor, fraction = CONTROLS[label]
            control = ConsensusControl(factor, reference=lambda step: reference[step],
                                       active=lambda step, last=int(steps * fraction): step < last)
            rows[label] = run(n, shards, test, label, steps, control)
        elif label not in rows:
            rows[label] = run(n, shards, test, label, steps)
        print(f"{label:38s} avg-model acc {rows[label]['avg_model_accuracy']:.3f}  "
              f"worker acc {rows[label]['mean_worker_accuracy']:.3f}  consensus {rows[label]['consensus_phase1']:.3f}/"
              f"{rows[label]['consensus_phase2']:.3f}  {rows[label]['bytes_per_worker_step']:.0f} B/step", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rows", nargs="+", default=ROWS, metavar="LABEL",
                        help="labels to (re)run (quoted: they hold spaces and commas); the others are kept")
    add_output_flags(parser, "consensus")
    args = parser.parse_args()
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown:
        parser.error(f"--rows: unknown row {unknown[0]!r}; rows: {', '.join(map(repr, ROWS))}")
    t0 = time.perf_counter()
    rows = run_rows(args.nodes, args.steps, args.rows)
    key = f"simulated_{args.nodes}_workers"
    results = {k: v for k, v in previous(args.out).items() if k.startswith("simulated_")}
    kept = results.get(key, {}).get("rows", {}) if results.get(key, {}).get("steps") == args.steps else {}
    merged = {label: rows.get(label, kept.get(label)) for label in ROWS if label in rows or label in kept}
    allreduce = merged.get("centralized (PmSGD)", {}).get("bytes_per_worker_step")
    for r in merged.values():
        r["communication_vs_allreduce"] = r["bytes_per_worker_step"] / allreduce if allreduce else None
    results[key] = {"nodes": args.nodes, "steps": args.steps, "lr_phases": list(LRS), "model_bytes": model_bytes(),
                    "rows": merged, "seconds": time.perf_counter() - t0}
    finish(args, results, plot)


def plot(results, path):
    keys = sorted(results, key=lambda k: results[k]["nodes"])
    fig, axes = subplots(len(keys), 2, figsize=(11, 3.8 * len(keys)), squeeze=False)
    for (ax1, ax2), key in zip(axes, keys):
        rows = results[key]["rows"]
        for label, r in rows.items():
            if label.startswith("ring") or label.startswith("random push, SGP"):
                d = np.convolve([exact for _, exact in r["distances"]], np.ones(10) / 10, mode="valid")
                ax1.semilogy(d, label=label)
        ax1.set_xlabel("step")
        ax1.set_ylabel("consensus distance (moving average)")
        ax1.set_title(f"{results[key]['nodes']} workers")
        ax1.axvline(results[key]["steps"] // 2, color="k", lw=0.8, ls="--")
        ax1.legend(fontsize=7)
        shown = {k: r for k, r in rows.items() if r.get("communication_vs_allreduce") is not None}
        ax2.scatter([r["communication_vs_allreduce"] for r in shown.values()],
                    [r["avg_model_accuracy"] for r in shown.values()])
        for k, r in shown.items():
            ax2.annotate(k, (r["communication_vs_allreduce"], r["avg_model_accuracy"]), fontsize=7)
        ax2.set_xscale("log")
        ax2.set_xlabel("bytes sent / allreduce's")
        ax2.set_ylabel("test accuracy (average model)")
    fig.tight_layout()
    save(fig, path)


if __name__ == "__main__":
    main()
