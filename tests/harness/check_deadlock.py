"""Deliberate deadlock (run by test_harness.py with a short MPIDEC_TEST_TIMEOUT)."""

import pytest

pytestmark = pytest.mark.mpi(min_size=2)


def test_ranks_wait_for_each_other_forever():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 0:
        comm.Barrier()           # the others never enter it
    else:
        comm.recv(source=0)      # rank 0 never sends
