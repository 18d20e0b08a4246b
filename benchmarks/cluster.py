"""Time per step and time to accuracy of every algorithm on the emulated cluster, the links'
calibration, and the network model's validation against them (docs/cluster.md).

    python benchmarks/cluster.py measure      # as root: jobs/cluster.sh grid, writes results/cluster.json
    python benchmarks/cluster.py report       # fit, validate, project; tables and plots (no MPI)

``measure`` brings up each setting of :data:`GRID` (hosts x ranks per host, link rate, a
slowed host), probes the links (ping-pong between hosts and within one, the time of one
AD-PSGD average, and each kind of exchange with the model's size, every rank at once),
then trains the digits classifier with every algorithm of :data:`RUNS` (``mpidec
train``, the same settings for all but the learning rate of SignumMV) and keeps each
run's mean step time (n x batch / samples per second: the synchronous step that processes
as many samples, also for AD-PSGD, the median of :data:`REPEATS` runs) and the steps it
took to reach :data:`TARGET` test accuracy with the averaged model. ``report`` fits
latency on the ping-pongs and, per setting, the fraction of the tbf rate each kind of
exchange gets on the probes, predicts every measured step time with
:mod:`mpidec.netmodel` from the run's own compute time, and projects to large clusters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpidec.atomic import write_json  # noqa: E402

RESULTS = ROOT / "benchmarks/results/cluster.json"
TARGET = 0.9          # test accuracy of the averaged model
BATCH = 32
# (name, hosts, ranks per host, link rate, slowed host and factor or None, runs)
NO_OVERLAP = ("overlap=False",)  # compute_time is then pure compute: the model's input
RUNS = [("PmSGD", None, NO_OVERLAP), ("DSGD", "ring", NO_OVERLAP), ("DmSGD", "ring", NO_OVERLAP),
        ("DecentLaM", "ring", NO_OVERLAP), ("DmSGD", "one_peer_exponential", NO_OVERLAP),
        ("LocalSGD", None, ("period=4", *NO_OVERLAP)), ("SignumMV", None, NO_OVERLAP), ("ADPSGD", "ring", ())]
FEW_RUNS = [RUNS[0], RUNS[1], RUNS[4], RUNS[7]]
# compressed gossip (docs/compression.md) where bytes cost most: a bf16 wire and CHOCO's top-k 10%
COMPRESSED_RUNS = [("DSGD", "ring", ("wire_dtype=bfloat16", *NO_OVERLAP)),
                   ("CHOCO", "ring", ("compressor=top_k", "ratio=0.1", "gamma=0.4", *NO_OVERLAP))]
SLOW_RUNS = [RUNS[0], RUNS[1], RUNS[7]]
# (name, hosts, ranks per host, link rate, slowed host and factor or None, runs), in the order run
GRID = [
    ("4x1-200mbit", 4, 1, "200mbit", None, RUNS),
    ("4x1-200mbit-slow8", 4, 1, "200mbit", (4, 8), SLOW_RUNS),
    ("2x2-50mbit", 2, 2, "50mbit", None, FEW_RUNS),
    ("4x1-25mbit", 4, 1, "25mbit", None, RUNS + COMPRESSED_RUNS),
    ("4x1-200mbit-mobilenet", 4, 1, "200mbit", None, FEW_RUNS),
]
MODEL, EPOCHS = "resnet20", 5   # 0.27 M parameters (1.08 MB), 11 steps per epoch on 4 workers
DIGITS = ("--dataset", "digits")
# settings with a larger model: (model, data flags, epochs); MobileNetV2 has 2.24 M parameters
# (8.9 MB) and needs 3-channel images: the synthetic set at 16x16 (32 steps per epoch on 4 workers)
LARGER = {"4x1-200mbit-mobilenet": ("mobilenet_v2", ("--dataset", "synthetic", "--image-size", "16"), 2)}
# AD-PSGD's pace varies most from one run to the next on this shared machine (4 x 1 at 200
# Mbit/s with a slowed host: 163-324 ms a step over four runs): the median of three
REPEATS = {"ADPSGD": 3}
LR = {"SignumMV": 0.006}  # per 256 samples; sign steps need a small rate (the others: 0.4)
PROBE_SIZES = (1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22)


# ---------------------------------------------------------------- on the cluster (under MPI)

def probe(out: str, model_bytes: int) -> None:
    """Ping-pong rank 0 <-> the last rank (other host) and rank 0 <-> 1 (same host when
    ranks per host >= 2); the time of an AD-PSGD average of 8 bytes with the last rank;
    and the exchanges of training with a model of ``model_bytes`` (:func:`exchange_times`)."""
    import numpy as np
    import torch
    from mpi4py import MPI

    import mpidec
    from mpidec.comm import MPICommunicator

    world = mpidec.init()
    rank, n = world.Get_rank(), world.Get_size()
    hosts = world.allgather(MPI.Get_processor_name())
    result = {"hosts": hosts}
    pairs = {"remote": n - 1}
    if hosts[0] == hosts[1]:
        pairs["local"] = 1
    for kind, peer in pairs.items():
        times = {}
        for size in PROBE_SIZES:
            buf = np.zeros(size, dtype=np.uint8)
            samples = []
            for rep in range(6):
                world.Barrier()
                start = time.perf_counter()
                if rank == 0:
                    world.Send(buf, dest=peer)
                    world.Recv(buf, source=peer)
                elif rank == peer:
                    world.Recv(buf, source=0)
                    world.Send(buf, dest=0)
                samples.append((time.perf_counter() - start) / 2)
            times[size] = statistics.median(samples[1:])
        result[kind] = world.bcast(times, root=0)
    comm = MPICommunicator()
    window = comm.model_window([torch.zeros(1, dtype=torch.float64)])
    world.Barrier()
    samples = []
    if rank == 0:
        for _ in range(30):
            start = time.perf_counter()
            window.average_with(n - 1)
            samples.append(time.perf_counter() - start)
    world.Barrier()
    window.free()
    result["average_8_bytes"] = world.bcast(statistics.median(samples[5:]) if samples else None, root=0)
    result["exchanges"] = exchange_times(world, comm, model_bytes)
    if rank == 0:
        write_json(out, result)


def exchange_times(world, comm, model_bytes: int, reps: int = 10) -> dict:
    """Seconds of one exchange of a ``model_bytes`` float32 model as training does it, every
    rank at once (the slowest rank's time): a gossip round on the ring and on the one-peer
    exponential schedule (repetition k: step k's round), the allreduce PmSGD uses,
    SignumMV's majority vote, and AD-PSGD's averages: every active (even) rank with its
    passive ring neighbour ``rank - 1`` at once, as the active workers of a training run
    average concurrently (two such averages on 4 x 1 at 200 Mbit/s took 187-260 ms each,
    one alone 127 ms: the hosts' TCP and progress threads share this machine's 2 cores).
    The ping-pong is one flow at a time; these load every host's link as a step does. Each
    kind is repeated as training repeats it, step after step (after another kind, TCP's
    state from that one slows the next: one-peer rounds took 640-720 ms interleaved with
    the others against 400 ms in a row, on 4 x 1 at 25 Mbit/s), and the median of ``reps``
    is kept (one exchange varies by +-25% from the next through tbf)."""
    import torch
    from mpi4py import MPI

    from mpidec import topology

    n = world.Get_size()
    x = torch.zeros(model_bytes // 4)
    ring, peer = topology.ring(n), topology.one_peer_exponential(n)

    def timed(exchange) -> float:
        samples = []
        for rep in range(-2, reps):  # two warm-ups: connections, buffers, Horovod's negotiation
            world.Barrier()
            start = time.perf_counter()
            exchange(rep)
            samples.append(world.allreduce(time.perf_counter() - start, op=MPI.MAX))
        return statistics.median(samples[2:])

    votes = torch.empty_like(x)
    times = {"ring": timed(lambda step: comm.neighbor_average([x], ring)),
             "one_peer": timed(lambda step: comm.neighbor_average([x], peer, step)),
             "allreduce": timed(lambda step: comm.allreduce([x])),
             "vote": timed(lambda step: comm.majority_vote_async([x], [votes]).wait())}
    window = comm.model_window([x])  # only now: the other exchanges run as in training, with no window
    active = world.Get_rank() % 2 == 0  # AD-PSGD's roles on an even ring
    times["pairwise"] = timed(lambda step: window.average_with((world.Get_rank() - 1) % n) if active else None)
    world.Barrier()
    window.free()
    return times


# ---------------------------------------------------------------- the grid (as root, outside MPI)

def cluster(*args, check=True, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "jobs/cluster.sh"), *args], cwd=ROOT, text=True, capture_output=True,
                          check=check, env={**os.environ, **(env or {})})


def train(setting, model, algorithm, topology, options, epochs, out: Path, data=DIGITS) -> dict:
    """One ``mpidec train`` on the running cluster; returns its step time (the slowest rank's
    pace, from the train records' samples per second), compute time and accuracy curve."""
    _, hosts, per_host, *_ = setting
    command = ["python", "-m", "mpidec", "train", *data, "--model", model, "--algorithm", algorithm,
               "--batch-size", str(BATCH), "--lr", str(LR.get(algorithm, 0.4)), "--momentum", "0.9",
               "--warmup-epochs", "0", "--decay", "none", "--epochs", str(epochs), "--log-every", "5",
               "--checkpoint-every", "0", "--no-progress", "--out", str(out)]
    command += ["--topology", topology] if topology else []
    for option in options:
        command += ["--option", option]
    started = time.perf_counter()
    done = cluster("exec", "--hosts", str(hosts), "--ranks-per-host", str(per_host), "--", *command, check=False)
    if done.returncode != 0:
        return {"failed": done.returncode, "log": (done.stdout + done.stderr)[-2000:]}
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    train_records = [r for r in records if r["event"] == "train"][1:]  # the first interval: warm-up
    n = hosts * per_host
    samples = [r["samples_per_s"] for r in train_records]
    step = n * BATCH / statistics.median(samples)
    evals = [(r["step"], r["test_accuracy"]) for r in records if r["event"] == "eval"]
    reached = next((s for s, acc in evals if acc >= TARGET), None)
    compute = statistics.median(r["compute_time"] for r in train_records)
    if algorithm == "ADPSGD":  # its records are rank 0's own steps; the summary's mean is every rank's
        compute = json.loads((out / "summary.json").read_text())["compute_time"]
    return {"step_seconds": step, "compute_seconds": compute,
            "final_accuracy": evals[-1][1], "steps_to_target": reached,
            "seconds_to_target": reached * step if reached is not None else None,
            "wall_seconds": time.perf_counter() - started, "evals": evals}


def measure(args) -> None:
    from cluster_report import MODEL_BYTES

    keep = RESULTS.exists() and (args.resume or args.only or args.probes_only or args.algorithms)
    results = json.loads(RESULTS.read_text()) if keep else {"settings": {}}
    results.update(model=MODEL, epochs=EPOCHS, batch=BATCH, target=TARGET)
    for setting in GRID:
        name, hosts, per_host, rate, slow, runs = setting
        if args.only and name not in args.only or args.resume and name in results["settings"]:
            continue
        again = bool(args.algorithms) and name in results["settings"]  # those runs only: keep the rest
        flags = ["--hosts", str(hosts), "--ranks-per-host", str(per_host), "--rate", rate]
        if slow:
            flags += ["--host-rate", f"{slow[0]}={_slower(rate, slow[1])}"]
        cluster("up", *flags)
        try:
            work = ROOT / "results/cluster" / name
            model, data, epochs = LARGER.get(name, (MODEL, DIGITS, EPOCHS))
            if again:
                entry = results["settings"][name]
            else:
                cluster("exec", "--hosts", str(hosts), "--ranks-per-host", str(per_host), "--", "python",
                        str(Path(__file__).resolve()), "probe", str(work / "probe.json"), str(MODEL_BYTES[model]))
                probed = json.loads((work / "probe.json").read_text())
                print(f"{name}: exchanges " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in probed["exchanges"].items()),
                      flush=True)
                if args.probes_only:
                    results["settings"][name]["probe"] = probed
                    write_json(RESULTS, results)
                    continue
                entry = {"hosts": hosts, "per_host": per_host, "rate": rate, "slow": slow,
                         "allreduce": _allreduce_backend(), "probe": probed, "runs": []}
            for index, (algorithm, topology, options) in enumerate(runs):
                if again and algorithm not in args.algorithms:
                    continue
                out = work / f"{model}-{algorithm}-{topology or 'none'}-{index}"
                run = median_run([train(setting, model, algorithm, topology, options, epochs,
                                        out.with_name(f"{out.name}.{k}") if k else out, data)
                                  for k in range(REPEATS.get(algorithm, 1))])
                record = {"model": model, "algorithm": algorithm, "topology": topology, "options": list(options), **run}
                if again:
                    entry["runs"][index] = record
                else:
                    entry["runs"].append(record)
                print(f"{name} {algorithm} {topology or ''}: "
                      + (f"{run['step_seconds'] * 1e3:.1f} ms/step, to {TARGET}: {run['steps_to_target']} steps"
                         if "failed" not in run else f"FAILED {run['log'][-300:]}"), flush=True)
                results["settings"][name] = entry
                write_json(RESULTS, results)
        finally:
            cluster("down", check=False)


def median_run(tries: list[dict]) -> dict:
    """The try with the median step time, with every try's step time; a failure if all failed."""
    done = sorted((run for run in tries if "failed" not in run), key=lambda run: run["step_seconds"])
    if not done:
        return tries[0]
    return {**done[(len(done) - 1) // 2], "tries_step_seconds": [run["step_seconds"] for run in done]}


def _allreduce_backend() -> str:
    """What PmSGD and LocalSGD will allreduce with: Horovod when it imports, else MPI."""
    found = subprocess.run([sys.executable, "-c", "import horovod.torch"], capture_output=True).returncode == 0
    return "horovod" if found else "mpi"


def _slower(rate: str, factor: float) -> str:
    value, unit = float(rate.rstrip("abcdefghijklmnopqrstuvwxyz")), rate.lstrip("0123456789.")
    return f"{value / factor:g}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("out")
    p.add_argument("model_bytes", type=int)
    m = sub.add_parser("measure")
    m.add_argument("--only", nargs="+", choices=[g[0] for g in GRID],
                   help="settings of GRID to (re-)measure; the others stay as they are in the results file")
    m.add_argument("--resume", action="store_true", help="skip the settings already in the results file")
    m.add_argument("--probes-only", action="store_true",
                   help="probe the links of the settings measured already again, keeping their training runs")
    m.add_argument("--algorithms", nargs="+", choices=sorted({run[0] for *_, runs in GRID for run in runs}),
                   help="train these algorithms again in the settings measured already, keeping the probes "
                        "and the other runs")
    r = sub.add_parser("report")
    r.add_argument("--plots", default=str(ROOT / "docs/figures"))
    args = parser.parse_args()
    if args.command == "probe":
        probe(args.out, args.model_bytes)
    elif args.command == "measure":
        measure(args)
    else:
        from cluster_report import report  # noqa: E402  (benchmarks/: fit, validation, projections)

        report(RESULTS, Path(args.plots))


if __name__ == "__main__":
    main()
