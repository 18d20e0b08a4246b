"""Communication on 4 real MPI ranks, checked against dense W @ X and the simulator."""

import gc
import re
import resource
import sys
import time

import numpy as np
import pytest
import torch

from mpidec import topology as T
from oracles import assert_rows_match, dense_gossip, node_tensors

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.fixture(scope="module")
def world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def test_raw_neighbourhood_collective_gives_exact_numbers(world):
    """mpi4py alone: a ring graph communicator gathers exactly the neighbours' values."""
    rank, n = world.Get_rank(), world.Get_size()
    left, right = (rank - 1) % n, (rank + 1) % n
    graph = world.Create_dist_graph_adjacent([left, right], [left, right], reorder=False)
    recv = np.zeros(2)
    graph.Ineighbor_allgather(np.array([10.0 * rank]), recv).Wait()
    graph.Free()
    assert recv.tolist() == [10.0 * left, 10.0 * right]


def test_horovod_allreduce_gives_exact_numbers(world):
    from mpidec.comm.allreduce import horovod_unusable

    if horovod_unusable():
        pytest.skip(horovod_unusable())  # not installed, switched off, or built for another MPI
    import horovod.torch as hvd

    hvd.init(comm=world)
    n = world.Get_size()
    out = hvd.allreduce(torch.arange(5, dtype=torch.float64) * (world.Get_rank() + 1), op=hvd.Sum)
    assert out.tolist() == (np.arange(5) * n * (n + 1) / 2).tolist()


@pytest.fixture(params=["point_to_point", "collective"])
def transport(request, monkeypatch):
    """Every exchange test twice: small messages go as persistent point-to-point requests,
    large ones as one neighbourhood collective (``mpidec.comm.mpi.P2P_BYTES`` is the boundary)."""
    from mpidec.comm import mpi

    monkeypatch.setattr(mpi, "P2P_BYTES", 1 << 62 if request.param == "point_to_point" else -1)
    return request.param


@pytest.mark.parametrize("name", list(T.BUILDERS))
def test_neighbour_average_equals_dense_for_every_builder(comm, name, transport):
    topo = T.build(name, comm.size) if name != "hypercube" or comm.size & (comm.size - 1) == 0 else None
    if topo is None:
        pytest.skip("hypercube needs a power-of-two world")
    models = node_tensors(comm.size, seed=11)
    expected = dense_gossip(models, topo, range(7))
    for step in range(7):
        comm.neighbor_average(models[comm.rank], step=step, topology=topo)
    assert_rows_match(models, expected, [comm.rank])


def test_mpi_equals_simulator_bit_for_bit(comm, transport):
    from mpidec.comm import Simulator

    topo = T.one_peer_exponential(comm.size)
    mine, simulated = node_tensors(comm.size, seed=12), node_tensors(comm.size, seed=12)
    for step in range(5):
        comm.neighbor_average(mine[comm.rank], step=step, topology=topo)
    Simulator(comm.size).run(lambda c: [c.neighbor_average(simulated[c.rank], topo, s) for s in range(5)])
    for a, b in zip(mine[comm.rank], simulated[comm.rank]):
        assert torch.equal(a, b)


def test_exchanges_in_flight_together(comm, transport):
    """Two exchanges to the same neighbours in flight, waited in the opposite order: the
    point-to-point messages must match in order (one tag, MPI's non-overtaking rule)."""
    topo = T.ring(comm.size)
    a, b = node_tensors(comm.size, seed=13), node_tensors(comm.size, seed=14)
    want_a, want_b = dense_gossip(a, topo, [0]), dense_gossip(b, topo, [0])
    ha = comm.neighbor_average_async(a[comm.rank], topology=topo)
    hb = comm.neighbor_average_async(b[comm.rank], topology=topo)
    hb.wait()
    ha.wait()
    assert_rows_match(a, want_a, [comm.rank])
    assert_rows_match(b, want_b, [comm.rank])


def test_the_size_boundary_comes_from_the_environment_and_a_bad_value_is_named(monkeypatch):
    from mpidec.comm.mpi import p2p_bytes

    monkeypatch.setenv("MPIDEC_P2P_BYTES", "4096")
    assert p2p_bytes() == 4096
    monkeypatch.setenv("MPIDEC_P2P_BYTES", "64KB")
    with pytest.raises(ValueError, match="MPIDEC_P2P_BYTES='64KB' is not a whole number of bytes"):
        p2p_bytes()


def test_prepared_exchanges_are_bounded_and_never_freed_in_flight(comm, monkeypatch):
    """Past ``MAX_PREPARED``, the least recently used exchange that is not in flight goes
    (so the count stays at the most that were ever in flight together)."""
    from mpidec.comm import MPICommunicator, mpi

    monkeypatch.setattr(mpi, "MAX_PREPARED", 2)
    fresh, topo = MPICommunicator(comm.comm), T.ring(comm.size)
    xs = [torch.full((16,), float(comm.rank + 10 * k), dtype=torch.float64) for k in range(4)]
    handles = [fresh.neighbor_average_async(x, topo) for x in xs]  # four in flight: none can go
    assert len(fresh._prepared) == 4
    for h in handles:
        h.wait()
    for k in range(6):  # idle now: each new (edges, buffers) pair takes the place of the oldest
        fresh.neighbor_average(xs[0] if k == 0 else torch.zeros(16, dtype=torch.float64), topo)
        assert len(fresh._prepared) == 4 and not any(e.active for e in fresh._prepared.values())
    row = topo.W[comm.rank]
    for k, x in enumerate(xs):
        want = row @ (np.arange(comm.size) + 10 * k)
        if k == 0:
            want = row @ (topo.W @ (np.arange(comm.size) + 10 * k))
        assert x[0].item() == pytest.approx(want, abs=1e-13)


def test_a_handle_dropped_in_flight_leaves_its_buffers_to_the_communicator(comm, transport):
    """An optimizer deleted with messages in flight (OSGP's, between steps) drops their
    handles unwaited: MPI still writes the receive buffer when the message arrives, so the
    buffers must live until the request is complete (under MPICH the freed rows were written
    later: heap corruption, a SIGABRT tests later). The next operation completes them."""
    import weakref

    topo = T.ring(comm.size)
    x = torch.full((300,), float(comm.rank), dtype=torch.float64)
    handle = comm.neighbor_allgather_async(x, topo)
    del handle
    # at once, but for one case: mpidec's exit watch thread holds the main thread's frame
    # between its looks (0.2 s apart; holding it keeps frame ids unique), and a frame object
    # held when its call returns keeps the call's locals (here the request) until then
    deadline = time.monotonic() + 2
    while not comm._orphans and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(comm._orphans) == 1
    rows = weakref.ref(comm._orphans[0].buffers[1])
    assert rows().shape == (len(topo.in_neighbors(comm.rank)), 300)
    y = torch.full((300,), float(comm.rank), dtype=torch.float64)
    comm.neighbor_average(y, topo)  # completes the orphan first
    assert not comm._orphans and rows() is None
    assert y[0].item() == pytest.approx(float(topo.W[comm.rank] @ np.arange(comm.size)), abs=1e-15)


def test_small_messages_go_point_to_point_and_large_ones_as_a_collective(comm):
    """The two transports' boundary is ``P2P_BYTES`` of the message (the default 64 KiB)."""
    from mpidec.comm import MPICommunicator, mpi

    fresh, topo = MPICommunicator(comm.comm), T.symmetric_exponential(comm.size)
    x = torch.full((mpi.P2P_BYTES // 8,), float(comm.rank), dtype=torch.float64)
    fresh.neighbor_average(x, topology=topo)
    fresh.neighbor_average(x, topology=topo)
    assert not fresh._graphs and len(fresh._prepared) == 1  # prepared once, started twice
    y = torch.full((mpi.P2P_BYTES // 8 + 1,), float(comm.rank), dtype=torch.float64)
    fresh.neighbor_average(y, topology=topo)
    assert len(fresh._graphs) == 1
    want = float(topo.W[comm.rank] @ np.arange(comm.size))
    assert x[0].item() == y[0].item() == pytest.approx(want, abs=1e-15)


def test_time_varying_schedule_reuses_graph_communicators(comm, monkeypatch):
    from mpidec.comm import mpi

    monkeypatch.setattr(mpi, "P2P_BYTES", -1)  # graph communicators are the collective's
    sched = T.one_peer_exponential(comm.size)
    before = len(comm._graphs)
    x = [torch.zeros(3, dtype=torch.float64)]
    for step in range(4 * sched.period):
        comm.neighbor_average(x, step=step, topology=sched)
    assert len(comm._graphs) - before <= sched.period


def test_an_aperiodic_schedule_runs_in_flat_memory(comm, transport):
    """random_matching makes a new topology every step: the plans must go with them (they
    were kept forever: 4.5 KB a step at 4 ranks), the graph communicators stay bounded."""
    from mpidec.comm.base import MAX_PLANS, _Plan

    sched = T.random_matching(comm.size, seed=3)
    x = [torch.zeros(64, dtype=torch.float64)]

    def run(steps, start):
        for step in range(start, start + steps):
            comm.neighbor_average(x, step=step, topology=sched)
        gc.collect()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB

    warm = run(500, 0)  # every distinct matching, buffer and graph communicator is made by now
    peak = run(4000, 500)
    plans = sum(type(o) is _Plan for o in gc.get_objects())
    assert len(comm._plans) <= MAX_PLANS and plans <= MAX_PLANS
    assert len(comm._graphs) <= comm._max_graphs
    assert peak - warm < 2048, f"peak RSS grew {peak - warm} KB over 4000 steps"


def test_horovod_built_for_another_mpi_is_not_loaded(world, tmp_path, monkeypatch, capfd):
    """A Horovod whose extension needs MPI libraries the MPI in use does not have aborted the
    job when imported: 'auto' falls back to MPI and says why, 'horovod' refuses with the same
    reason, and the real Horovod of this setup passes the check."""
    import os

    from mpidec.comm import allreduce
    from mpidec.comm.allreduce import horovod_unusable, loaded_mpi_library, select_allreduce

    library = loaded_mpi_library()
    assert library and os.path.exists(library), "no libmpi in /proc/self/maps"
    for name in [m for m in sys.modules if m.split(".")[0] == "horovod"]:  # find_spec looks there first
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delenv("MPIDEC_SKIP_HOROVOD", raising=False)
    real = horovod_unusable()
    assert real is None or "not installed" in real or "another MPI" in real, real
    (tmp_path / "horovod" / "torch").mkdir(parents=True)
    (tmp_path / "horovod" / "__init__.py").write_text("raise SystemExit('must not be imported')\n")
    (tmp_path / "horovod" / "torch" / "mpi_lib_v2.cpython-311-x86_64-linux-gnu.so").write_bytes(
        b"\x7fELF\0...libmpi.so.7\0libmpi_cxx.so.7\0libc.so.6\0")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(allreduce, "_fallback_said", False)
    assert select_allreduce("auto", world).name == "mpi"
    reason = (f"Horovod was built against another MPI (libmpi.so.7, libmpi_cxx.so.7, not in "
              f"{os.path.dirname(library)}, where this job's {os.path.basename(library)} is)")
    if world.Get_rank() == 0:
        assert reason in capfd.readouterr().err
    with pytest.raises(ImportError, match=re.escape(reason)):
        select_allreduce("horovod", world)
    monkeypatch.setenv("MPIDEC_SKIP_HOROVOD", "1")
    with pytest.raises(ImportError, match="switched off"):
        select_allreduce("horovod", world)


@pytest.mark.parametrize("backend", ["mpi", "auto"])
def test_allreduce_mean_and_scalars(world, backend):
    from mpidec.comm import MPICommunicator

    c = MPICommunicator(allreduce=backend)
    n, r = c.size, c.rank
    xs = [torch.full((3,), float(r), dtype=torch.float64), torch.full((2, 2), float(2 * r))]
    c.allreduce(xs)
    assert xs[0].tolist() == [(n - 1) / 2] * 3 and xs[1].flatten().tolist() == [float(n - 1)] * 4
    assert c.allreduce_scalar(r, "sum") == n * (n - 1) / 2
    assert c.allreduce_scalar(r, "max") == n - 1 and c.allreduce_scalar(r, "mean") == (n - 1) / 2


def test_shape_mismatch_is_named_on_every_rank(comm):
    shapes = [torch.zeros(3), torch.zeros(4 if comm.rank != 1 else 6)]
    with pytest.raises(ValueError, match=r"parameter 1 is \(\(4,\), 'torch.float32'\) on rank 0 but \(\(6,\)"):
        comm.check_same_shapes(shapes)


def test_topology_of_the_wrong_size_is_refused(comm):
    with pytest.raises(T.TopologyError, match=f"has {comm.size + 1} nodes but the job has {comm.size} ranks"):
        comm.neighbor_average([torch.zeros(3)], T.ring(comm.size + 1))
