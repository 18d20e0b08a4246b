"""AD-PSGD and the one-sided model windows on the simulator (threads), plus two short MPI jobs."""

import os
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from adpsgd_workers import (flat, initial_models, interpolating_problem, training_worker,
                            zero_gradient_worker)
from mpidec import topology as T
from mpidec.comm import Simulator
from mpidec.optim import ADPSGD
from mpidec.bipartite import bipartite_roles
from commands import assert_uncaught_ends_the_job, mpiexec


def roles(topo):
    return [bipartite_roles(topo, i) for i in range(topo.n)]


# ------------------------------------------------------------------ topology

def test_roles_are_a_two_colouring_with_rank_0_active():
    assert roles(T.ring(4)) == [(True, [1, 3]), (False, [0, 2]), (True, [1, 3]), (False, [0, 2])]
    assert roles(T.ring(2)) == [(True, [1]), (False, [0])]
    cube = roles(T.hypercube(8))
    assert [a for a, _ in cube] == [bin(i).count("1") % 2 == 0 for i in range(8)]
    assert cube[7] == (False, [3, 5, 6])
    assert roles(T.star(5))[0] == (True, [1, 2, 3, 4])


@pytest.mark.parametrize("topo, passive", [(T.ring(4), 1), (T.hypercube(8), 1), (T.star(5), 1), (T.ring(2), 1)])
def test_the_loops_counter_lives_on_a_passive_worker(topo, passive):
    """Rank 0's first neighbour: a worker that never starts an average (on rank 0, busy in
    averages with a slow host, the emulated cluster's job stepped in 189 ms instead of 144)."""
    counter_ranks = Simulator(topo.n).run(lambda comm: ADPSGD([torch.zeros(2)], lr=0.1, comm=comm,
                                                               topology=topo).counter_rank)
    assert counter_ranks == [passive] * topo.n and not roles(topo)[passive][0]


def test_a_counter_on_another_node_hands_out_every_value_once():
    def node(comm):
        counter = comm.counter(owner=comm.size - 1)
        mine = [counter.add(3) for _ in range(50)]
        counter.free()
        return mine

    values = Simulator(3).run(node)
    assert sorted(v for mine in values for v in mine) == list(range(0, 3 * 150, 3))
    with pytest.raises(RuntimeError, match="failed") as failure:
        Simulator(2).run(lambda comm: comm.counter(owner=2))
    assert "counter owner 2 is not a rank" in str(failure.value.__cause__)


@pytest.mark.parametrize("topo, message", [
    (T.ring(5), "odd cycle"), (T.complete(4), "odd cycle"), (T.exponential(8), "odd cycle"),
    (T.one_peer_exponential(4), "static topology"), (T.ring(1), "at least 2 workers"),
], ids=["ring5", "complete", "exponential", "schedule", "one_node"])
def test_unusable_topologies_raise_topology_error(topo, message):
    with pytest.raises(T.TopologyError, match=message):
        bipartite_roles(topo, 0)


def test_the_optimizer_rejects_a_topology_on_every_node():
    def build(comm):
        ADPSGD([torch.zeros(3, requires_grad=True)], lr=0.1, comm=comm)  # default: ring(5), not bipartite

    with pytest.raises(RuntimeError, match="failed") as failure:
        Simulator(5).run(build)
    assert isinstance(failure.value.__cause__, T.TopologyError)
    assert "odd cycle" in str(failure.value.__cause__)


# ------------------------------------------------------------------ the window

def test_window_average_is_exact_over_mixed_dtypes():
    def node(comm):
        tensors = [torch.full((3,), 10.0 * comm.rank + 1, dtype=torch.float32),
                   torch.full((2, 2), -4.0 * comm.rank, dtype=torch.float64),
                   torch.full((5,), 2.0 * comm.rank, dtype=torch.float16)]
        window = comm.model_window(tensors)
        if comm.rank == 0:
            window.average_with(1)
        comm.allgather_object(None)  # node 1 reads after the average
        window.load(tensors)
        window.free()
        return [t.tolist() for t in tensors]

    for got in Simulator(2).run(node):
        assert got == [[6.0] * 3, [[-2.0, -2.0]] * 2, [1.0] * 5]


def test_an_average_waits_for_the_owners_update():
    """Node 1 holds its model while it adds 10; node 0's average must see the result."""
    holding = threading.Event()

    def node(comm):
        window = comm.model_window([torch.full((4,), float(comm.rank))])
        comm.allgather_object(None)
        if comm.rank == 1:
            with window.exclusive() as (x,):
                holding.set()
                threading.Event().wait(0.2)  # node 0 tries to average meanwhile
                x.add_(10.0)
        else:
            holding.wait()
            window.average_with(1)
        comm.allgather_object(None)
        out = torch.empty(4)
        window.load([out])
        window.free()
        return out.tolist()

    assert Simulator(2).run(node) == [[5.5] * 4, [5.5] * 4]  # (0 + 11) / 2; without the lock: 0.5 then 10.5


# ------------------------------------------------------------------ the update rule

def test_update_rule_with_stale_gradient_momentum_and_weight_decay():
    """Two nodes stepping in a fixed order equal the docstring's recursion."""
    lr, beta, wd = 0.1, 0.5, 0.01
    x0 = [np.array([1.0, 2.0]), np.array([5.0, -3.0])]
    grads = {(0, 0): [0.3, -0.2], (1, 0): [1.0, 0.5], (0, 1): [-0.4, 0.7], (1, 1): [0.2, 0.2]}  # (node, step)

    def node(comm):
        x = torch.tensor(x0[comm.rank]).requires_grad_()
        opt = ADPSGD([x], lr=lr, momentum=beta, weight_decay=wd, comm=comm)
        rounds = []
        for step in range(2):
            for turn in range(2):  # node 0 (active) steps, then node 1 (passive)
                if turn == comm.rank:
                    x.grad = torch.tensor(grads[(comm.rank, step)], dtype=torch.float64)
                    opt.step()
                    rounds.append(opt.last_gossip_rounds)
                comm.allgather_object(None)
        opt.finish(average=False)
        return x.detach().numpy(), rounds

    xa, xp = x0[0].copy(), x0[1].copy()     # window contents
    ha, hp = xa.copy(), xp.copy()           # parameters: the models the gradients were taken at
    ma, mp = np.zeros(2), np.zeros(2)
    for step in range(2):
        ma = beta * ma + np.array(grads[(0, step)]) + wd * ha
        xa = xp = (xa + xp) / 2
        xa = xa - lr * ma
        ha = xa.copy()
        mp = beta * mp + np.array(grads[(1, step)]) + wd * hp
        xp = xp - lr * mp
        hp = xp.copy()
    (got_a, rounds_a), (got_p, rounds_p) = Simulator(2).run(node)
    np.testing.assert_allclose(got_a, xa, rtol=0, atol=1e-13)
    np.testing.assert_allclose(got_p, xp, rtol=0, atol=1e-13)
    assert rounds_a == [1, 1] and rounds_p == [0, 0]  # the active node's one average a step


# ------------------------------------------------------------------ asynchronous runs

def test_pairwise_averages_preserve_the_mean_and_shrink_consensus():
    n = 4
    results = Simulator(n).run(zero_gradient_worker, 1000)
    x0, x1 = initial_models(n), np.stack([model for model, _ in results])
    assert results[0][1] + results[2][1] == 1000  # the active nodes' steps: one average each
    np.testing.assert_allclose(x1.mean(axis=0), x0.mean(axis=0), rtol=0, atol=1e-12)
    spread = lambda x: ((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()  # noqa: E731
    # threads run in GIL slices: one active node's averages come in bursts, and each burst
    # mixes only its three nodes (1e-9 to 1e-5 here; MPI reaches 0)
    assert spread(x0) > 1.0 and spread(x1) < 1e-3 * spread(x0)


def test_converges_to_the_minimiser_no_node_can_find_alone():
    n = 4
    problem = interpolating_problem(n)
    results = Simulator(n).run(training_worker, problem, 3000 * n, lr=0.3)  # threads: few active steps
    start = np.abs(problem.x0 - problem.x_star).max()
    assert start > 1.0
    assert np.abs(np.stack([x for x, _ in results]) - problem.x_star).max() < 1e-3 * start


@pytest.mark.parametrize("slow", [0, 3], ids=["active_slow", "passive_slow"])
def test_a_straggler_does_not_hold_the_others_back(slow):
    n, total = 4, 800
    problem = interpolating_problem(n)
    steps = [s for _, s in Simulator(n).run(training_worker, problem, total, lr=0.3, slow_rank=slow, delay=0.02)]
    assert sum(steps) == total
    assert min(s for r, s in enumerate(steps) if r != slow) >= 5 * max(steps[slow], 1)


def test_finish_ends_with_the_exact_average():
    n = 4

    def node(comm):
        params = [t.requires_grad_() for t in (torch.randn(3, dtype=torch.float64) + comm.rank,
                                               torch.randn(2, 2, dtype=torch.float64))]
        before = flat(params)
        opt = ADPSGD(params, lr=0.1, comm=comm)
        for _ in range(comm.rank):  # 0 + 1 + 2 + 3 steps, zero gradients
            opt.step()
        total = opt.finish()
        with pytest.raises(RuntimeError, match="after finish"):
            opt.step()
        return before, flat(params), total

    results = Simulator(n).run(node)
    mean_before = np.mean([b for b, _, _ in results], axis=0)
    for _, after, total in results:
        assert total == 6
        np.testing.assert_allclose(after, mean_before, rtol=0, atol=1e-14)


# ------------------------------------------------------------------ MPI jobs: faults and progress

def test_an_exception_on_one_rank_ends_the_asynchronous_job():
    assert_uncaught_ends_the_job("tests/harness/adpsgd_exception.py", 1,
                                 "RuntimeError: deliberate exception on rank 1 while the others average with it")


def _library_version() -> str:
    """``MPI_Get_library_version()`` of the MPI this interpreter's mpi4py loads (no MPI_Init)."""
    code = "import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; print(MPI.Get_library_version())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout


def _remote_like_rma() -> tuple[dict | None, str]:
    """Settings under which the MPI in use serves one-sided operations between ranks of this
    node only when the target enters MPI, as a transport across nodes may: (env, why not)."""
    library = _library_version()
    if library.startswith("MPICH"):
        return {"MPIR_CVAR_NOLOCAL": "1"}, ""  # ranks of one node talk through the network module
    if library.startswith("Open MPI v4"):
        ompi_info = os.path.join(os.path.dirname(shutil.which("mpiexec") or ""), "ompi_info")
        try:
            components = subprocess.run([ompi_info], capture_output=True, text=True, timeout=60).stdout
        except OSError:
            components = ""
        if "MCA osc: ucx" in components:
            return {"OMPI_MCA_osc": "ucx"}, ""
        return None, f"this Open MPI 4 ({ompi_info}) has no osc/ucx component"
    return None, (f"no transport that needs target progress on one node in {library.splitlines()[0][:60]!r} "
                  "(Open MPI 5 selects osc/ucx only with RDMA devices, which do the operations in hardware)")


def test_progress_thread_lets_peers_average_with_a_worker_outside_mpi():
    """On a transport that needs the target to enter MPI, an average with a worker that sleeps
    outside MPI (or an add to the counter it owns) waits for it without the progress thread;
    with it, averages and adds go on. (Some transports do the counter's atomics one-sided:
    at least one of the two must stall without the thread.)"""
    env, why_not = _remote_like_rma()
    if env is None:
        pytest.skip(why_not)
    rc, out = mpiexec("tests/harness/rma_progress.py", env=env)
    assert rc == 0, out
    counts = {what: {float(k): int(v) for k, v in re.findall(rf"progress ([\d.]+) s: (\d+) {what}", out)}
              for what in ("averages while the target slept", "counter adds while its owner slept")}
    assert min(c[0] for c in counts.values()) <= 10, counts  # these settings do need the target
    assert all(c[0.001] >= 20 for c in counts.values()), counts
