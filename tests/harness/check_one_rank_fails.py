"""Deliberately broken MPI test (run by test_harness.py, not collected by the suite)."""

import pytest

pytestmark = pytest.mark.mpi(min_size=2)


def test_assertion_fails_on_rank_2_only():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    assert comm.Get_rank() != 2, "deliberate failure on rank 2"
    comm.Barrier()  # rank 2 never arrives: without the harness the others wait forever
