"""AD-PSGD and the MPI model windows on real ranks (passive-target RMA, one process each)."""

import numpy as np
import pytest
import torch

from adpsgd_workers import gather, initial_models, interpolating_problem, training_worker, zero_gradient_worker
from mpidec import topology as T
from mpidec.optim import ADPSGD

pytestmark = pytest.mark.mpi(min_size=2)


def test_window_average_is_exact_over_mixed_dtypes(comm):
    r = comm.rank
    tensors = [torch.full((3,), 10.0 * r + 1, dtype=torch.float32), torch.full((2, 2), -4.0 * r, dtype=torch.float64),
               torch.full((5,), 2.0 * r, dtype=torch.float16)]
    window = comm.model_window(tensors)
    comm.allgather_object(None)
    if r % 2 == 0 and r + 1 < comm.size:
        window.average_with(r + 1)  # pairs (0, 1), (2, 3), ...
    comm.allgather_object(None)
    window.load(tensors)
    window.free()
    partner = r + 1 if r % 2 == 0 else r - 1
    s = r + (partner if partner < comm.size else r)  # the last rank of an odd job has no partner
    assert [t.tolist() for t in tensors] == [[5.0 * s + 1] * 3, [[-2.0 * s] * 2] * 2, [1.0 * s] * 5]


def test_counter_hands_out_every_value_once(comm):
    counter = comm.counter()
    mine = [counter.add(1) for _ in range(200)]
    counter.free()
    assert sorted(v for values in comm.allgather_object(mine) for v in values) == list(range(200 * comm.size))


def test_counter_adds_in_flight_together_hand_out_every_value_once(comm):
    counter = comm.counter(owner=comm.size - 1)
    pending = [counter.iadd(2) for _ in range(20)]  # each on its own thread, all in flight
    mine = [p.wait() for p in pending]
    counter.free()
    assert sorted(v for values in comm.allgather_object(mine) for v in values) == list(range(0, 40 * comm.size, 2))


def test_progress_is_off_on_one_node_unless_asked_for(comm, monkeypatch):
    from mpidec.comm.mpi_window import progress_interval

    monkeypatch.delenv("MPIDEC_RMA_PROGRESS", raising=False)
    assert progress_interval(comm.comm) == 0.0
    monkeypatch.setenv("MPIDEC_RMA_PROGRESS", "0.002")
    assert progress_interval(comm.comm) == 0.002


def test_pairwise_averages_preserve_the_mean_and_shrink_consensus(comm):
    n = comm.size
    model, steps = zero_gradient_worker(comm, 3000)
    assert comm.allreduce_scalar(steps if comm.rank % 2 == 0 else 0) == 3000  # even ranks are active
    x0, x1 = initial_models(n), gather(comm, model)
    np.testing.assert_allclose(x1.mean(axis=0), x0.mean(axis=0), rtol=0, atol=1e-12)
    spread = lambda x: ((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()  # noqa: E731
    assert spread(x0) > 1.0 and spread(x1) < 1e-6 * spread(x0)


def test_converges_to_the_minimiser_no_node_can_find_alone(comm):
    problem = interpolating_problem(comm.size)
    model, _ = training_worker(comm, problem, 1500 * comm.size, lr=0.3)
    start = np.abs(problem.x0 - problem.x_star).max()
    assert start > 1.0
    assert np.abs(gather(comm, model) - problem.x_star).max() < 1e-3 * start


@pytest.mark.parametrize("slow", ["active", "passive"])
def test_a_straggler_does_not_hold_the_others_back(comm, slow):
    n, total = comm.size, 300 * comm.size
    slow_rank = 0 if slow == "active" else 1  # rank 1 is passive on the ring
    _, steps = training_worker(comm, interpolating_problem(n), total, lr=0.3, slow_rank=slow_rank, delay=0.05)
    steps = comm.allgather_object(steps)
    assert sum(steps) == total
    assert min(s for r, s in enumerate(steps) if r != slow_rank) >= 5 * max(steps[slow_rank], 1)


def test_an_unusable_topology_raises_on_every_rank(comm):
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(T.TopologyError, match="static topology"):
        ADPSGD([x], lr=0.1, topology=T.one_peer_exponential(comm.size), comm=comm)
    if comm.size >= 3:
        with pytest.raises(T.TopologyError, match="odd cycle"):
            ADPSGD([x], lr=0.1, topology=T.complete(comm.size), comm=comm)
