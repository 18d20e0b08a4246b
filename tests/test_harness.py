"""The harness itself: failures and hangs on one rank end the whole MPI job, quickly.

Each test launches a small 4-rank job and bounds it with a timeout: a job that hangs
fails the test instead of stalling the suite.
"""

import re
import time

import pytest

from commands import BOUND, assert_uncaught_ends_the_job, mpiexec


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
    assert_uncaught_ends_the_job("tests/harness/exception_on_one_rank.py", 1, "RuntimeError: deliberate exception on rank 1")


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
