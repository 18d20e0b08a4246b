"""The harness itself: failures and hangs on one rank end the whole MPI job, quickly.

Each test launches a small 4-rank job and bounds it with a timeout: a job that hangs
fails the test instead of stalling the suite.
"""

import os
import re
import subprocess
import sys
import time
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


@pytest.mark.parametrize("how, reason", [("exit3", "sys.exit(3) at "), ("return", "its program ended")])
def test_a_rank_that_leaves_while_the_others_wait_for_it_ends_the_job_naming_it(how, reason):
    started = time.monotonic()
    rc, out = mpiexec("tests/harness/leave_early.py", how, env={"MPIDEC_EXIT_GRACE": "3"})
    assert rc != 0, out
    assert re.search(r"\[rank [023]/4\] rank 1 left the job \(" + re.escape(reason), out), out
    assert "leave_early.py:" in out  # where the waiting rank was stuck
    assert time.monotonic() - started < BOUND


def test_a_rank_that_leaves_early_while_the_others_still_compute_is_no_error():
    rc, out = mpiexec("tests/harness/leave_early.py", "legit", env={"MPIDEC_EXIT_GRACE": "2"})
    assert rc == 0, out
    assert "left the job" not in out


def test_a_usage_error_is_printed_once_not_once_per_rank():
    rc, out = mpiexec("-m", "mpidec", "train", "--epochs", "three")
    assert rc != 0
    assert out.count("argument --epochs: invalid int value: 'three'") == 1, out
    assert out.count("usage: mpidec train") == 1, out
