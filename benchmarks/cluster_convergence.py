"""Steps to accuracy on the simulator, for the time-to-accuracy projections of docs/cluster.md.

    python benchmarks/cluster_convergence.py        # writes benchmarks/results/cluster_convergence.json

The network model (:mod:`mpidec.netmodel`) predicts time per step; how many steps an
algorithm needs is a property of the algorithm, the graph and the number of workers. This
measures it on a small task the simulator runs at 16 and 64 workers in minutes: the
64-32-10 MLP of benchmarks/digits.py on the digits, split evenly across the workers either
shuffled (``iid``: here every algorithm needs the same steps) or label-sorted (``sorted``: each
worker sees one or two classes, where sparse graphs need more steps), 32 samples per worker and step, momentum 0.9, the test accuracy of the average model every
:data:`EVERY` steps until :data:`TARGET`. ``python benchmarks/cluster.py report`` multiplies
these steps by the projected step times. AD-PSGD is left out: the simulator runs it in
threads, whose interleaving (not the algorithm) would decide its steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits  # noqa: E402  (benchmarks/)
from mpidec import optim, topology  # noqa: E402
from mpidec.atomic import write_json  # noqa: E402
from mpidec.comm import Simulator  # noqa: E402

TARGET, EVERY, MAX_STEPS, BATCH = 0.9, 5, 600, 32
# (label, algorithm, topology builder or None, options, learning rate)
RUNS = [("PmSGD", "PmSGD", None, {}, 0.1), ("LocalSGD", "LocalSGD", None, {"period": 4}, 0.1),
        ("SignumMV", "SignumMV", None, {}, 0.003), ("DSGD (ring)", "DmSGD", "ring", {}, 0.1),
        ("DSGD (one_peer_exponential)", "DmSGD", "one_peer_exponential", {}, 0.1),
        ("DSGD (exponential)", "DmSGD", "exponential", {}, 0.1)]


def shards_of(split: str, n: int, seed: int = 0):
    """The training digits split evenly (``iid``: shuffled; ``sorted``: label-sorted); the test set."""
    if split == "sorted":
        return digits.data(n, seed)
    [(X, y)], test = digits.data(1, seed)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return [(X[part], y[part]) for part in torch.tensor_split(order, n)], test


def worker(comm, shards, test, algorithm, builder, options, lr):
    """Train until the average model reaches TARGET; the step it did (None: not in MAX_STEPS)."""
    torch.manual_seed(0)
    net = digits.model(seed=0)
    topo = topology.build(builder, comm.size) if builder else None
    opt = optim.by_name(algorithm)(net.parameters(), lr=lr, momentum=0.9, topology=topo, comm=comm, **options)
    X, y = shards[comm.rank]
    g = torch.Generator().manual_seed(comm.rank)
    for step in range(1, MAX_STEPS + 1):
        idx = torch.randint(0, len(y), (BATCH,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        opt.step()
        if step % EVERY == 0:
            own = [p.detach().clone() for p in net.parameters()]
            average_accuracy = digits.accuracies(net, test, comm)[0]  # the same on every worker
            if average_accuracy >= TARGET:
                return step
            with torch.no_grad():
                for p, mine in zip(net.parameters(), own):
                    p.copy_(mine)
    return None


def run(split, n, label, algorithm, builder, options, lr) -> dict:
    shards, test = shards_of(split, n)
    started = time.perf_counter()
    steps = Simulator(n, timeout=600).run(worker, shards, test, algorithm, builder, options, lr)[0]
    print(f"{split:>6} {n:>4} workers  {label:<30} {steps if steps else f'> {MAX_STEPS}':>6} steps to {TARGET:.0%} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return {"split": split, "workers": n, "label": label, "algorithm": algorithm, "topology": builder,
            "options": options, "lr": lr, "steps_to_target": steps}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--splits", nargs="+", default=["iid", "sorted"], choices=["iid", "sorted"])
    parser.add_argument("--out", default="benchmarks/results/cluster_convergence.json")
    args = parser.parse_args()
    rows = []
    for split in args.splits:
        for n in args.workers:
            rows += [run(split, n, *spec) for spec in RUNS]
    write_json(args.out, {"target": TARGET, "every": EVERY, "max_steps": MAX_STEPS, "batch": BATCH, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
