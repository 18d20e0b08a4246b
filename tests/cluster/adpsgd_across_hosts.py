"""AD-PSGD with ranks on two emulated hosts: one-sided averages over TCP (Open MPI osc/ucx),
with the progress thread that a passive-target window spanning hosts needs.

Run by tests/cluster/cluster_tests.py as
``jobs/cluster.sh run --hosts 2 --ranks-per-host 2 -- python -m pytest --with-mpi THIS_FILE``.
"""

import time

import numpy as np
import pytest
import torch

from adpsgd_workers import gather, initial_models, interpolating_problem, training_worker, zero_gradient_worker

pytestmark = pytest.mark.mpi(min_size=4)


def test_ranks_span_hosts_and_windows_get_a_progress_thread(comm):
    from mpi4py import MPI

    from mpidec.comm.mpi_window import progress_interval

    hosts = comm.allgather_object(MPI.Get_processor_name())
    assert len(set(hosts)) == 2 and hosts[0] == hosts[1] != hosts[2] == hosts[3], hosts
    assert progress_interval(comm.comm) == 1e-3  # the default across hosts (MPIDEC_RMA_PROGRESS unset)


def test_averages_reach_a_passive_rank_on_the_other_host_while_it_sleeps(comm):
    """Rank 0 (host 1) averages 3 times with rank 3 (host 2, passive) while rank 3 sleeps
    outside MPI for 8 s: over TCP each average needs rank 3's progress thread (without it,
    the first average waits until rank 3 wakes). One clock: the hosts share the kernel."""
    from mpidec.comm.mpi_window import MPIModelWindow

    window = MPIModelWindow(comm.comm, [torch.zeros(1, dtype=torch.float64)])
    comm.allgather_object(None)
    done = []
    if comm.rank == 3:
        time.sleep(8.0)
    elif comm.rank == 0:
        time.sleep(0.2)  # rank 3 has left MPI
        for _ in range(3):
            window.average_with(3)
            done.append(time.time())
    woke = time.time()
    comm.allgather_object(None)
    window.free()
    done, woke = comm.allgather_object(done)[0], comm.allgather_object(woke)[3]
    assert len(done) == 3 and done[-1] < woke, f"averages at {[t - woke for t in done]} s from the wake-up"


def test_pairwise_averages_across_hosts_preserve_the_mean(comm):
    model, steps = zero_gradient_worker(comm, 100)
    assert comm.allreduce_scalar(steps if comm.rank % 2 == 0 else 0) == 100  # even ranks are active
    x0, x1 = initial_models(comm.size), gather(comm, model)
    np.testing.assert_allclose(x1.mean(axis=0), x0.mean(axis=0), rtol=0, atol=1e-12)
    spread = lambda x: ((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()  # noqa: E731
    assert spread(x0) > 1.0 and spread(x1) < 0.2 * spread(x0)  # the simulator: 0.04 after 100 averages


def test_training_across_hosts_converges(comm):
    problem = interpolating_problem(comm.size)
    model, steps = training_worker(comm, problem, 200, lr=0.3, min_steps=40)  # the simulator: 0.11 of the start
    start = np.abs(problem.x0 - problem.x_star).max()
    assert min(comm.allgather_object(steps)) >= 40
    assert np.abs(gather(comm, model) - problem.x_star).max() < 0.5 * start
