"""AD-PSGD with a straggler: wall time to a fixed number of samples, against DSGD and PmSGD.

    mpiexec --bind-to none -n 4 python benchmarks/adpsgd.py

Every rank trains the same MLP classifier on minibatches of one synthetic dataset (a
random teacher network labels Gaussian inputs; each rank draws its own batches). One rank
is slowed by a factor ``s``: it sleeps ``(s - 1) * t0`` per step, where ``t0`` is the
measured compute time of one step with all ranks busy. Each algorithm runs until the
ranks together have processed ``samples`` samples:

- DSGD (ring) and PmSGD (allreduce) are synchronous: every rank makes ``samples / (n b)``
  steps and each step waits for the slow rank;
- ADPSGD (ring, active/passive) stops on a shared counter: fast ranks make more steps.

Reported per (algorithm, s): wall time from a barrier to the end (the last step, then an
exact average of the models), the test loss of that average, and each rank's step count.
Writes benchmarks/results/adpsgd.json and docs/figures/adpsgd.png.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mpidec import optim, topology
from common import add_output_flags, finish, save, subplots
from mpidec.comm import MPICommunicator

ALGORITHMS = ("ADPSGD", "DSGD", "PmSGD")


class Teacher:
    """Gaussian inputs labelled by a random two-layer teacher (10 classes)."""

    def __init__(self, dim=32, classes=10, test=4096, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self._w1, self._w2 = torch.randn(dim, 64, generator=g), torch.randn(64, classes, generator=g)
        self.test = self.batch(test, torch.Generator().manual_seed(seed + 1))

    def batch(self, size, generator):
        x = torch.randn(size, self.dim, generator=generator)
        return x, torch.tanh(x @ self._w1).matmul(self._w2).argmax(dim=1)


def make_model(dim, width, seed=0):
    torch.manual_seed(seed)  # the same initial model on every rank
    return torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                               torch.nn.ReLU(), torch.nn.Linear(width, 10))


def train(comm, data, algorithm, args, samples, slow_rank, delay):
    """One run to ``samples`` samples; returns (seconds, test loss of the averaged model, this rank's steps)."""
    model = make_model(data.dim, args.width)
    opt = optim.by_name(algorithm)(model.parameters(), lr=args.lr, topology=topology.ring(comm.size), comm=comm)
    generator = torch.Generator().manual_seed(1000 + comm.rank)
    per_rank = samples // (comm.size * args.batch)
    counter = comm.counter() if algorithm == "ADPSGD" else None
    comm.allreduce_scalar(0.0)  # start together
    start = time.perf_counter()
    while counter.add(args.batch) < samples if counter else opt.steps < per_rank:
        x, y = data.batch(args.batch, generator)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if comm.rank == slow_rank:
            time.sleep(delay)
        opt.step()
    if counter:
        opt.finish(average=True)  # waits for every rank, then the exact average
        counter.free()
    else:
        comm.allreduce(list(model.parameters()))
    seconds = comm.allreduce_scalar(time.perf_counter() - start, op="max")
    return seconds, test_loss(model, data), opt.steps


@torch.no_grad()
def test_loss(model, data) -> float:
    return torch.nn.functional.cross_entropy(model(data.test[0]), data.test[1]).item()


def step_time(comm, data, args) -> float:
    """``t0``: median compute time of one step (forward, backward, SGD) with every rank busy."""
    model = make_model(data.dim, args.width)
    sgd = torch.optim.SGD(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(comm.rank)
    times = []
    comm.allreduce_scalar(0.0)
    for _ in range(40):
        start = time.perf_counter()
        x, y = data.batch(args.batch, generator)
        sgd.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        sgd.step()
        times.append(time.perf_counter() - start)
    return comm.allreduce_scalar(statistics.median(times[10:]), op="max")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slowdowns", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--samples", type=int, default=4 * 100 * 128, help="samples processed by all ranks together")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=512, help="hidden units of the MLP's two hidden layers")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--slow-rank", type=int, default=None, help="default: the last rank (passive on the ring)")
    add_output_flags(parser, "adpsgd")
    args = parser.parse_args()

    comm = MPICommunicator()
    n, slow_rank = comm.size, args.slow_rank if args.slow_rank is not None else comm.size - 1
    data = Teacher()
    for algorithm in ALGORITHMS:  # warm-up: Horovod, graph communicators, windows
        train(comm, data, algorithm, args, 5 * n * args.batch, slow_rank, 0.0)
    t0 = step_time(comm, data, args)
    rows = []
    for s in args.slowdowns:
        for algorithm in ALGORITHMS:
            seconds, loss, steps = train(comm, data, algorithm, args, args.samples, slow_rank, (s - 1) * t0)
            row = {"algorithm": algorithm, "slowdown": s, "seconds": seconds, "test_loss": loss,
                   "steps_per_rank": comm.allgather_object(steps)}
            rows.append(row)
            if comm.rank == 0:
                print(f"s={s}  {algorithm:<7} {seconds:6.2f} s  loss {loss:.4f}  steps {row['steps_per_rank']}", flush=True)
    if comm.rank == 0:
        for row in rows:
            base = next(r for r in rows if r["slowdown"] == row["slowdown"] and r["algorithm"] == "ADPSGD")
            row["speedup_of_adpsgd"] = row["seconds"] / base["seconds"]
            row["ideal_speedup"] = (row["slowdown"] * (n - 1) + 1) / n  # sync: s t0 per step; async: sum of rates
        initial = test_loss(make_model(data.dim, args.width), data)
        result = {"ranks": n, "slow_rank": slow_rank, "step_seconds": t0, "samples": args.samples,
                  "batch": args.batch, "width": args.width, "lr": args.lr, "allreduce": comm.allreduce_backend,
                  "initial_test_loss": initial, "rows": rows}
        print(f"t0 = {t0 * 1e3:.2f} ms per step")
        finish(args, result, plot)


def plot(results, path):
    rows, n, slow_rank, initial_loss = (results[k] for k in ("rows", "ranks", "slow_rank", "initial_test_loss"))
    fig, (left, right) = subplots(1, 2, figsize=(11, 4), gridspec_kw={"wspace": 0.3})
    for algorithm in ALGORITHMS:
        mine = [r for r in rows if r["algorithm"] == algorithm]
        slowdowns = [r["slowdown"] for r in mine]
        left.plot(slowdowns, [r["seconds"] for r in mine], marker="o", label=algorithm)
        right.plot(slowdowns, [r["test_loss"] for r in mine], marker="o", label=algorithm)
    right.axhline(initial_loss, color="grey", linestyle="--", label="initial model")
    right.set_ylim(0, initial_loss * 1.1)
    for ax, label in ((left, "wall time to the fixed sample count (s)"), (right, "test loss of the averaged model")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(slowdowns, [str(s) for s in slowdowns])
        ax.set_xlabel(f"slowdown s of rank {slow_rank}")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"one straggler among {n} ranks, same samples for every algorithm")
    save(fig, path)


if __name__ == "__main__":
    main()
