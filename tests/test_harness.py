"""The harness itself: failures and hangs on one rank end the whole MPI job, quickly.

Each test launches a small 4-rank job and bounds it with a timeout: a job that hangs
fails the test instead of stalling the suite.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
BOUND = 90  # seconds; the jobs below end in a few seconds when the harness works


def mpiexec(*args, env=None):
    cmd = ["mpiexec", "-n", "4", sys.executable, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=BOUND, cwd=HERE.parent,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd)} still ran after {BOUND}s: a failure on one rank left the others blocked")
    return done.returncode, done.stdout + done.stderr


def test_an_assertion_failing_on_one_rank_fails_the_suite():
    rc, out = mpiexec("-m", "pytest", "--with-mpi", "-p", "no:cacheprovider", "tests/harness/check_one_rank_fails.py")
    assert rc != 0
    assert "[rank 2/4] FAILED tests/harness/check_one_rank_fails.py::test_assertion_fails_on_rank_2_only" in out
    assert "deliberate failure on rank 2" in out


def test_a_deadlocked_test_is_stopped_by_the_watchdog():
    rc, out = mpiexec("-m", "pytest", "--with-mpi", "-p", "no:cacheprovider", "tests/harness/check_deadlock.py",
                      env={"MPIDEC_TEST_TIMEOUT": "5"})
    assert rc != 0
    assert re.search(r"\[rank \d/4\] tests/harness/check_deadlock.py::\S+ ran longer than 5s", out)
    assert 'check_deadlock.py", line' in out  # the stack dump shows where it hung


def test_an_exception_on_one_rank_ends_every_rank():
    rc, out = mpiexec("tests/harness/exception_on_one_rank.py")
    assert rc != 0
    assert "[rank 1/4] uncaught exception, aborting the whole job" in out
    assert "RuntimeError: deliberate exception on rank 1" in out
