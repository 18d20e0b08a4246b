"""Kong et al. 2021 on a small problem: control consensus in the first phase only.

    python benchmarks/consensus.py            (the in-process simulator, no MPI needed)

16 simulated workers train a small MLP on scikit-learn's digits, label-sorted across
the workers (each sees one or two classes), momentum 0.9, two learning-rate phases.
Rows: centralized (PmSGD, allreduce), DmSGD on a ring without control, DmSGD on the
ring with consensus controlled to 1/2 and 1/4 of the uncontrolled run's distance at
each step, and 1/4 in the first phase only. Control compares the cheap estimate of each
gossip round's input with the target. Reported: test accuracy of the workers' average
model and the mean of the workers' own accuracies, the mean exact consensus distance of
the models per phase, and communication in model-sized messages sent per worker (a
ring gossip round sends 2, a ring allreduce 2 (n - 1) / n per step).
Writes benchmarks/results/consensus.json and docs/figures/consensus.png.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import add_output_flags, finish, save, subplots
from digits import accuracies, data, model, train
from mpidec import optim, topology
from mpidec.comm import Simulator
from mpidec.consensus import ConsensusControl, exact_distance


def worker(comm, shards, test, algorithm, lrs, steps, batch, control, distances):
    net = model()
    opt = optim.by_name(algorithm)(net.parameters(), lr=lrs[0], momentum=0.9, topology=topology.ring(comm.size),
                                   comm=comm, **({"consensus_control": control} if control else {}))
    rounds = [0]

    def measure(step):
        rounds[0] += opt.last_gossip_rounds
        estimate = opt.consensus_estimate()                           # the gossip input's (controlled)
        exact = exact_distance(list(net.parameters()), comm)          # the models' (reported)
        if comm.rank == 0:
            distances.append((estimate or 0.0, exact))

    train(opt, net, shards[comm.rank], comm.rank, lrs, steps, batch, measure)
    return (*accuracies(net, test, comm), rounds[0])


def run(n, shards, test, algorithm, steps, control=None):
    distances = []
    results = Simulator(n).run(worker, shards, test, algorithm, (0.1, 0.01), steps, 32, control, distances)
    averaged, _, rounds = results[0]
    messages = rounds * 2 if algorithm != "PmSGD" else steps * 2 * (n - 1) / n
    half = steps // 2
    return {"avg_model_accuracy": averaged, "mean_worker_accuracy": float(np.mean([r[1] for r in results])),
            "messages_per_worker": messages, "gossip_rounds": rounds,
            "consensus_phase1": float(np.mean([d for _, d in distances[:half]])),
            "consensus_phase2": float(np.mean([d for _, d in distances[half:]])),
            "distances": distances}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=400)
    add_output_flags(parser, "consensus")
    args = parser.parse_args()
    n, steps, t0 = args.nodes, args.steps, time.perf_counter()
    shards, test = data(n)
    rows = {"centralized (PmSGD)": run(n, shards, test, "PmSGD", steps)}
    rows["ring, no control"] = free = run(n, shards, test, "DmSGD", steps)
    reference = [estimate for estimate, _ in free["distances"]]
    for label, factor, phases in (("ring, control 1/2", 0.5, steps), ("ring, control 1/4", 0.25, steps),
                                  ("ring, 1/4 in phase 1 only", 0.25, steps // 2)):
        control = ConsensusControl(factor, reference=lambda step: reference[step],
                                   active=lambda step, phases=phases: step < phases)
        rows[label] = run(n, shards, test, "DmSGD", steps, control)
    allreduce = rows["centralized (PmSGD)"]["messages_per_worker"]
    for label, r in rows.items():
        r["communication_vs_allreduce"] = r["messages_per_worker"] / allreduce
        print(f"{label:28s} avg-model acc {r['avg_model_accuracy']:.3f}  worker acc {r['mean_worker_accuracy']:.3f}  "
              f"consensus {r['consensus_phase1']:.3f}/{r['consensus_phase2']:.3f}  "
              f"messages {r['messages_per_worker']:.0f} ({r['communication_vs_allreduce']:.2f}x allreduce)", flush=True)
    finish(args, {"nodes": n, "steps": steps, "lr_phases": [0.1, 0.01], "rows": rows,
                  "seconds": time.perf_counter() - t0}, plot)


def plot(results, path):
    rows = results["rows"]
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 3.8))
    for label, r in rows.items():
        if label.startswith("ring"):
            d = np.convolve([exact for _, exact in r["distances"]], np.ones(10) / 10, mode="valid")
            ax1.semilogy(d, label=label)
    ax1.set_xlabel("step")
    ax1.set_ylabel("consensus distance (moving average)")
    ax1.axvline(len(next(iter(rows.values()))["distances"]) // 2, color="k", lw=0.8, ls="--")
    ax1.legend(fontsize=8)
    labels = list(rows)
    ax2.scatter([rows[k]["communication_vs_allreduce"] for k in labels], [rows[k]["avg_model_accuracy"] for k in labels])
    for k in labels:
        ax2.annotate(k, (rows[k]["communication_vs_allreduce"], rows[k]["avg_model_accuracy"]), fontsize=7)
    ax2.set_xlabel("communication / allreduce's")
    ax2.set_ylabel("test accuracy (average model)")
    save(fig, path)


if __name__ == "__main__":
    main()
