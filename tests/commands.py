"""Commands a serial test launches: short MPI jobs (``mpiexec -n 4`` in a subprocess, bounded by a
timeout, so that a job that hangs fails its test instead of stalling the suite) and the
``mpidec`` command as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BOUND = 90  # seconds; the jobs of the tests end in a few seconds when all is well


def mpiexec(*args, env=None) -> tuple[int, str]:
    """``mpiexec -n 4 python ARGS`` from the repository root: (exit status, stdout + stderr)."""
    cmd = ["mpiexec", "-n", "4", sys.executable, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BOUND, cwd=ROOT,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd)} still ran after {BOUND}s: a failure on one rank left the others blocked")
    return done.returncode, done.stdout + done.stderr


def assert_uncaught_ends_the_job(script: str, rank: int, error: str) -> None:
    """``script`` raises ``error`` on ``rank``: the job fails, naming the rank and the error."""
    rc, out = mpiexec(script)
    assert rc != 0
    assert f"[rank {rank}/4] uncaught exception, aborting the whole job" in out
    assert error in out, out


def run_mpidec(*args) -> subprocess.CompletedProcess:
    """``python -m mpidec ARGS`` from the repository root, as a user runs it (text output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mpidec", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)
