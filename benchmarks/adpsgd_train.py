"""AD-PSGD with a straggler through ``mpidec train``: the application, not only the optimizer.

    mpiexec --bind-to none -n 4 python benchmarks/adpsgd_train.py

Each algorithm trains the small CNN on the embedded digits (ring, iid split, 4 x 32
samples per global step, 10 epochs = 110 global steps) through :func:`mpidec.train.train`,
with its records, evaluations and checkpoints, while the last rank sleeps ``delay`` seconds
in every one of its steps. The synchronous algorithms (DSGD, DmSGD) make every rank wait
for it at every step; ADPSGD (:mod:`mpidec.train.asynchronous`) stops on the same number
of samples, taken by whichever ranks are free. After one warm-up run of each algorithm,
repetitions are interleaved so the machine's load falls on every configuration alike;
the table holds medians.

Reported per (algorithm, delay): the wall time of ``train()`` (slowest rank), its ratio to
the same algorithm without delay in the same repetition (run back to back), the slow rank's
share of the steps, and the test accuracy of the averaged model (medians over repetitions).
Writes benchmarks/results/adpsgd_train.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from mpi4py import MPI

import mpidec
from mpidec.atomic import write_json
from mpidec.train import TrainConfig, loop, train

ALGORITHMS = {"ADPSGD": {"momentum": 0.0, "lr": 0.4}, "DSGD": {"momentum": 0.0, "lr": 0.4},
              "DmSGD": {"momentum": 0.9, "lr": 0.4}}


STEP = loop.Trainer.train_step


def slowed(rank: int, delay: float):
    """``Trainer.train_step`` that sleeps ``delay`` seconds in every step of rank ``rank``."""
    step = STEP  # the original: wrapping the previous run's wrapper would add up the delays

    def train_step(self, *args):
        if self.rank == rank and delay:  # (sleep(0) would still give up the CPU: a delay on a busy machine)
            time.sleep(delay)
        step(self, *args)

    return train_step


def run(world, algorithm: str, delay: float, epochs: int, out: str) -> dict:
    loop.Trainer.train_step = slowed(world.Get_size() - 1, delay)
    config = TrainConfig(algorithm=algorithm, topology="ring", dataset="digits", epochs=epochs, batch_size=32,
                         warmup_epochs=0, decay="none", log_every=10, checkpoint_every=0, progress=False,
                         out=out, **ALGORITHMS[algorithm])
    world.Barrier()
    started = time.perf_counter()
    summary = train(config)
    seconds = world.allreduce(time.perf_counter() - started, op=MPI.MAX)
    return {"algorithm": algorithm, "delay": delay, "seconds": seconds, "test_accuracy": summary["test_accuracy"],
            "steps_per_rank": summary["steps_per_rank"], "samples": summary["samples"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 0.05, 0.2],
                        help="seconds the slow rank sleeps per step")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/adpsgd_train.json")
    args = parser.parse_args()

    world = mpidec.init()
    folder = world.bcast(tempfile.mkdtemp(prefix="adpsgd-train-") if world.Get_rank() == 0 else None)
    for algorithm in ALGORITHMS:  # warm-up: imports, plots, windows; not reported
        run(world, algorithm, 0.0, 1, f"{folder}/warm-up-{algorithm}")
    rows = []
    for repeat in range(args.repeats):
        for algorithm in ALGORITHMS:
            for delay in args.delays:  # the delays of one algorithm back to back: their ratio is fair
                row = run(world, algorithm, delay, args.epochs, f"{folder}/{algorithm}-{delay}-{repeat}")
                rows.append({**row, "repeat": repeat})
                if world.Get_rank() == 0:
                    print(f"delay {delay * 1e3:5.0f} ms  {algorithm:<6} {row['seconds']:6.2f} s  "
                          f"accuracy {row['test_accuracy']:.4f}  steps {row['steps_per_rank']}", flush=True)
    loop.Trainer.train_step = STEP
    if world.Get_rank() == 0:
        write_json(args.out, {"ranks": world.Get_size(), "epochs": args.epochs, "repeats": args.repeats,
                              "rows": summarize(rows, args.delays), "runs": rows})
        print(f"wrote {args.out}")


def summarize(rows, delays) -> list[dict]:
    """Per (algorithm, delay): median seconds, and the median over repeats of the time
    relative to the same repeat's first delay."""
    table = []
    for algorithm in ALGORITHMS:
        for delay in delays:
            mine = [r for r in rows if r["algorithm"] == algorithm and r["delay"] == delay]
            base = {r["repeat"]: r["seconds"] for r in rows if r["algorithm"] == algorithm and r["delay"] == delays[0]}
            table.append({"algorithm": algorithm, "delay": delay,
                          "seconds": statistics.median(r["seconds"] for r in mine),
                          "slowdown": statistics.median(r["seconds"] / base[r["repeat"]] for r in mine),
                          "slow_rank_share": statistics.median(r["steps_per_rank"][-1] / sum(r["steps_per_rank"])
                                                               for r in mine),
                          "test_accuracy": statistics.median(r["test_accuracy"] for r in mine)})
    return table


if __name__ == "__main__":
    main()
