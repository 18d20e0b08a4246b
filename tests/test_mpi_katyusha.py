"""SVRG and Katyusha X on real MPI ranks equal the numpy algorithm with the whole batch, and the simulator."""

import numpy as np
import pytest

from mpidec.comm import Simulator
from katyusha_oracle import TAU, SumOfNonconvex, reference, stratified_batches, worker

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.mark.parametrize("algorithm", ["SVRG", "KatyushaX"])
def test_mpi_iterates_equal_the_serial_algorithm_and_the_simulator(comm, algorithm):
    """p ranks, each with its shard and b/p terms of every batch, follow one process with batch b."""
    if 12 % comm.size:
        pytest.skip("the batch table splits over 1, 2, 3, 4, 6 or 12 ranks")
    batches = stratified_batches()
    mine = worker(comm, algorithm, batches)
    want, _ = reference(SumOfNonconvex(), batches, tau=TAU if algorithm == "KatyushaX" else None)
    np.testing.assert_allclose(mine, want, rtol=1e-10, atol=1e-10)
    simulated = Simulator(comm.size).run(worker, algorithm, batches)[comm.rank]
    np.testing.assert_allclose(mine, simulated, rtol=1e-12, atol=1e-12)
    everyone = comm.allgather_object(mine[-1])
    np.testing.assert_allclose(everyone, [mine[-1]] * comm.size, rtol=1e-14, atol=1e-14)
