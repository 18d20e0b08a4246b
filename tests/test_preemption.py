"""Stopping a real ``mpiexec -n 4 mpidec train`` job with real signals, from outside.

The model's checkpoint takes seconds (tests/harness/heavy_train.py: a ballast buffer and a
slow disk of 3 s per checkpoint file), more
than Open MPI's default 2 s between its first signal to the ranks and SIGKILL, so these runs
set ``OMPI_MCA_odls_base_sigkill_timeout`` as jobs/local.sh does. Each test bounds its jobs
with a timeout: a job that hangs fails the test instead of stalling the suite.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from processes import catches, children

ROOT = Path(__file__).resolve().parent.parent
KILL_TIMEOUT = 20  # odls_base_sigkill_timeout: the ranks have 2 x 20 s from mpiexec's first signal
BOUND = 600        # seconds for one job, start-up included (slow on a loaded machine)
SETTINGS = ["--algorithm", "DmSGD", "--topology", "ring", "--partition", "dirichlet", "--alpha", "0.3",
            "--epochs", "12", "--batch-size", "32", "--lr", "0.4", "--log-every", "2", "--checkpoint-every", "0",
            "--no-progress"]
HEAVY = ["tests/harness/heavy_train.py", "--model", "heavy_cnn"]  # checkpoints of 4 x 64 MB


def launch(out, *extra, program=HEAVY):
    env = {**os.environ, "OMPI_MCA_odls_base_sigkill_timeout": str(KILL_TIMEOUT), "MPIDEC_TEST_BALLAST_MB": "64",
           "MPIDEC_TEST_SLOW_DISK_S": "3", "OMP_NUM_THREADS": "1"}
    cmd = ["mpiexec", "-n", "4", sys.executable, *program, *SETTINGS, "--out", str(out), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(job) -> tuple[int, str]:
    try:
        out, _ = job.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail(f"the job still ran after {BOUND} s:\n{job.communicate()[0]}")
    return job.returncode, out


def records(out) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_training(job, out, steps: int) -> list[dict]:
    """The train records once the run has logged ``steps`` steps."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline and job.poll() is None:
        train = [r for r in records(out) if r["event"] == "train"]
        if train and train[-1]["step"] >= steps:
            return train
        time.sleep(0.1)
    pytest.fail(f"the run never reached step {steps}:\n{job.communicate()[0] if job.poll() is not None else ''}")


def final_state(out, rank):
    return torch.load(Path(out) / "checkpoints" / "step-00000132" / f"rank-{rank:05d}.pt", weights_only=False)


def test_sigterm_to_mpiexec_checkpoints_at_the_next_step_and_the_resumed_run_is_bit_identical(tmp_path):
    parts, whole = tmp_path / "parts", tmp_path / "whole"
    job = launch(parts)
    train = wait_for_training(job, parts, steps=10)
    job.send_signal(signal.SIGTERM)  # what timeout(1), a batch system or kill do to the launcher
    signalled = train[-1]["step"]
    rate = (train[-1]["step"] - train[0]["step"]) / max(train[-1]["time"] - train[0]["time"], 1e-3)
    rc, log = finish(job)
    summary = json.loads((parts / "summary.json").read_text())
    assert summary["status"] == "preempted", log
    assert summary["stopped_by"].startswith("SIGCONT from Open MPI's launcher"), log
    # the next step boundary after the signal, not KILL_TIMEOUT seconds later when Open MPI's SIGTERM comes
    assert signalled <= summary["steps"] <= signalled + 4 + 2 * rate, (signalled, rate, summary["steps"])
    assert summary["checkpoint_seconds"] > 2, "the checkpoint should take longer than Open MPI's default grace"
    assert "Traceback" not in log and "SIGKILL" not in log

    resumed, log = finish(launch(parts, "--resume"))
    assert resumed == 0, log
    assert json.loads((parts / "summary.json").read_text())["status"] == "finished"
    assert finish(launch(whole))[0] == 0
    for rank in range(4):
        a, b = final_state(parts, rank), final_state(whole, rank)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), rank
    numbers = ("event", "step", "lr", "loss", "accuracy", "consensus_distance", "test_loss", "test_accuracy")
    assert [{k: r.get(k) for k in numbers} for r in records(parts)] == \
           [{k: r.get(k) for k in numbers} for r in records(whole)]


def test_sigterm_to_one_rank_during_start_up_ends_preempted_with_exit_status_0(tmp_path):
    out = tmp_path / "run"
    job = launch(out, program=["-m", "mpidec", "train"])  # the handlers come first, before torch is imported
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:  # a rank that has its handler (cli.main's first line), still importing
        ranks = [pid for pid in children(job.pid) if catches(pid)]
        if ranks:
            break
        time.sleep(0.02)
    os.kill(ranks[0], signal.SIGTERM)
    rc, log = finish(job)
    assert rc == 0, log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["stopped_by"] == "SIGTERM", log
    assert (out / "checkpoints" / "latest").exists()  # a fresh run stopped at step 0 still resumes


CHILD = """
import sys, time
from mpidec import signals
signals.catch()
print("ready", flush=True)
time.sleep(float(sys.argv[1]))
print(signals.requested(), flush=True)
"""


@pytest.mark.parametrize("under_open_mpi, stop_first, expected", [
    (True, False, "SIGCONT from Open MPI's launcher (mpiexec was signalled)"),  # the launcher's first word
    (True, True, "None"),    # a resume after SIGSTOP (Ctrl-Z + fg forwarded, scontrol suspend/resume)
    (False, False, "None"),  # not launched by Open MPI: SIGCONT means nothing
])
def test_sigcont_is_a_stop_request_only_from_open_mpis_launcher_and_not_after_a_stop(under_open_mpi, stop_first,
                                                                                     expected):
    env = {k: v for k, v in os.environ.items() if k != "OMPI_COMM_WORLD_SIZE"}
    if under_open_mpi:
        env["OMPI_COMM_WORLD_SIZE"] = "1"
    child = subprocess.Popen([sys.executable, "-c", CHILD, "6"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    if stop_first:
        child.send_signal(signal.SIGSTOP)
        time.sleep(3)
    child.send_signal(signal.SIGCONT)
    out, _ = child.communicate(timeout=60)
    assert out.strip() == expected


def test_sigterm_and_sigint_are_requests_not_kills():
    for sig in (signal.SIGTERM, signal.SIGINT):
        child = subprocess.Popen([sys.executable, "-c", CHILD, "3"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(sig)
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0 and out.strip() == sig.name
