"""The in-process simulator: dense oracles, collective semantics, failure handling."""

import gc

import pytest
import torch

from mpidec import topology as T
from mpidec.comm import Simulator
from oracles import assert_rows_match, dense_gossip, node_tensors


@pytest.mark.parametrize("name", list(T.BUILDERS))
def test_neighbour_average_equals_dense_products(name):
    n = 8
    topo = T.build(name, n)
    models = node_tensors(n, seed=1)
    expected = dense_gossip(models, topo, range(6))
    Simulator(n).run(lambda comm: [comm.neighbor_average(models[comm.rank], topo, s) for s in range(6)])
    assert_rows_match(models, expected, range(n))


def test_many_exchanges_in_flight_waited_in_any_order():
    n, topo = 6, T.ring(6)
    a, b = node_tensors(n, seed=2), node_tensors(n, seed=3)
    want_a, want_b = dense_gossip(a, topo, [0]), dense_gossip(b, topo, [0])

    def node(comm):
        ha, hb = comm.neighbor_average_async(a[comm.rank], topo), comm.neighbor_average_async(b[comm.rank], topo)
        for h in ((ha, hb) if comm.rank % 2 else (hb, ha)):
            h.wait()

    Simulator(n).run(node)
    assert_rows_match(a, want_a, range(n))
    assert_rows_match(b, want_b, range(n))


def test_allreduce_and_scalars():
    n = 5
    xs = [[torch.full((4,), float(i), dtype=torch.float64), torch.full((2, 2), 2.0 * i)] for i in range(n)]

    def node(comm):
        comm.allreduce(xs[comm.rank])
        return [comm.allreduce_scalar(comm.rank, op) for op in ("sum", "mean", "max", "min")]

    results = Simulator(n).run(node)
    assert results == [[10, 2.0, 4, 0]] * n
    for x in xs:
        assert torch.equal(x[0], torch.full((4,), 2.0, dtype=torch.float64))
        assert torch.equal(x[1], torch.full((2, 2), 4.0))


def test_a_failing_node_stops_every_node():
    def node(comm):
        if comm.rank == 3:
            raise ValueError("boom on 3")
        comm.allreduce_scalar(1.0)

    with pytest.raises(RuntimeError, match="simulated node 3 failed: ValueError"):
        Simulator(4, timeout=30).run(node)


def test_mismatched_collectives_time_out_instead_of_hanging():
    def node(comm):
        if comm.rank != 0:
            comm.allreduce_scalar(1.0)

    with pytest.raises(RuntimeError, match="TimeoutError"):
        Simulator(3, timeout=0.5).run(node)


def test_shape_mismatch_across_nodes_is_named():
    def node(comm):
        comm.check_same_shapes([torch.zeros(3), torch.zeros(4 if comm.rank != 2 else 5)])

    with pytest.raises(RuntimeError, match=r"parameter 1 is \(\(4,\), 'torch.float32'\) on rank 0 but \(\(5,\), 'torch.float32'\) on rank 2"):
        Simulator(4).run(node)


def test_wrong_topology_size_and_integer_tensors_are_refused():
    with pytest.raises(RuntimeError, match="TopologyError.*has 5 nodes but the job has 4 ranks"):
        Simulator(4).run(lambda c: c.neighbor_average([torch.zeros(3)], T.ring(5)))
    with pytest.raises(RuntimeError, match="floating-point"):
        Simulator(2).run(lambda c: c.neighbor_average([torch.zeros(3, dtype=torch.int64)], T.ring(2)))


def test_sixty_four_nodes_agree_with_the_oracle():
    n, topo = 64, T.exponential(64)
    models = node_tensors(n, seed=4, specs=[((1000,), torch.float64)])
    expected = dense_gossip(models, topo, range(10))
    Simulator(n).run(lambda comm: [comm.neighbor_average(models[comm.rank], topo, s) for s in range(10)])
    assert_rows_match(models, expected, range(n))


def test_gossip_plans_stay_bounded_on_long_runs():
    """Plans are cached per topology, weakly and at most MAX_PLANS: an aperiodic schedule (a new
    topology every step) used to leave one plan per step behind, holding its topology."""
    from mpidec.comm.base import MAX_PLANS, _Plan

    n, steps = 4, 300
    sched = T.random_matching(n, seed=1)
    models = node_tensors(n, seed=5)
    sim = Simulator(n)
    sim.run(lambda comm: [comm.neighbor_average(models[comm.rank], step=s, topology=sched) for s in range(steps)])
    gc.collect()
    assert all(len(comm._plans) <= 1 for comm in sim.comms)
    assert sum(type(o) is _Plan for o in gc.get_objects()) <= n

    statics = [T.ring(n) for _ in range(2 * MAX_PLANS)]  # all alive: only the bound limits the cache
    sim.run(lambda comm: [comm.neighbor_average(models[comm.rank], topology=t) for t in statics])
    assert all(len(comm._plans) == MAX_PLANS for comm in sim.comms)

    fresh = node_tensors(n, seed=5)  # and the numbers are still those of W(t) @ X
    expected = dense_gossip(fresh, sched, range(20))
    Simulator(n).run(lambda comm: [comm.neighbor_average(fresh[comm.rank], step=s, topology=sched) for s in range(20)])
    assert_rows_match(fresh, expected, range(n))
