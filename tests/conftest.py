"""Test harness: serial tests run as usual; MPI tests run on 4 ranks under mpiexec.

Under ``--with-mpi`` every rank runs pytest. Two rules keep such a run from hanging:

- a failure on any rank prints ``[rank r/n]`` with the report and aborts the whole job
  (the other ranks may be blocked in a collective the failed rank will never join);
- a watchdog aborts the job, after dumping every thread's stack, when one test runs
  longer than ``MPIDEC_TEST_TIMEOUT`` seconds (default 180): a deadlock fails the suite.

Only rank 0 prints pytest's usual report.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading

import pytest

TEST_TIMEOUT = float(os.environ.get("MPIDEC_TEST_TIMEOUT", "180"))


def _under_mpi(config) -> bool:
    return bool(config.getoption("--with-mpi", default=False))


@pytest.hookimpl(trylast=True)  # after the terminal reporter is registered
def pytest_configure(config):
    if not _under_mpi(config):
        return
    from mpi4py import MPI

    config._mpidec_rank = MPI.COMM_WORLD.Get_rank()
    if config._mpidec_rank != 0:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            config.pluginmanager.unregister(reporter)


def _abort(config, message: str, stacks: bool = False) -> None:
    """``mpidec.runtime.abort`` from inside pytest: to the real stderr, after every thread's
    stack when ``stacks``."""
    from mpidec.runtime import abort

    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture()  # pytest holds fd 2 during a test: write to the real one
    if stacks:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.write("\n")
    abort(message)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _under_mpi(item.config):
        yield
        return

    def on_timeout():
        _abort(item.config, f"{item.nodeid} ran longer than {TEST_TIMEOUT:g}s (MPIDEC_TEST_TIMEOUT): "
               "deadlock? stacks above; aborting the job", stacks=True)

    watchdog = threading.Timer(TEST_TIMEOUT, on_timeout)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _under_mpi(item.config) and report.failed:
        _abort(item.config, f"FAILED {item.nodeid} ({report.when}); aborting the job so no rank waits forever:\n"
               f"{report.longreprtext}")


@pytest.fixture(scope="module")
def comm():
    """The MPI communicator over the world, for the tests marked ``mpi`` (one per test module)."""
    from mpidec.comm import MPICommunicator

    return MPICommunicator()
