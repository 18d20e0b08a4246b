"""Issue 11: every torch habit around step() gives the numbers of the update rule applied to
the gradients as they are when step() is called, with default constructor arguments
(overlap on), on the simulator; tests/test_mpi_habits.py runs the same body on MPI ranks."""

import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from habits import CASES, HABITS, check_habit, topology_for

N = 4


@pytest.mark.parametrize("habit", HABITS)
@pytest.mark.parametrize("algorithm, kwargs", CASES, ids=lambda c: str(c))
def test_habit_gives_the_update_rule_on_the_final_gradients(algorithm, kwargs, habit):
    check_habit(None, algorithm, kwargs, habit, topology_for(algorithm, N))


# ------------------------------------------------------------------ PmSGD: DDP's semantics


def _two_param_node(comm, use_second, overlap=True):
    a = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = optim.PmSGD([a, b], lr=0.1, comm=comm, overlap=overlap)
    loss = (a * (comm.rank + 1)).sum() + ((b * b).sum() if use_second(comm.rank) else 0)
    loss.backward()
    return opt, a, b


def test_pmsgd_backward_leaves_the_averaged_gradient():
    def node(comm):
        opt, a, b = _two_param_node(comm, lambda r: r == 0)
        return a.grad.tolist(), b.grad.tolist()

    mean = sum(range(1, N + 1)) / N
    for a, b in Simulator(N).run(node):
        assert a == [mean] * 3
        assert b == [2.0 / N] * 2   # only rank 0 has it: the others count as zeros


def test_pmsgd_parameter_without_a_gradient_anywhere_keeps_none_and_takes_no_step():
    def node(comm):
        opt, a, b = _two_param_node(comm, lambda r: False)
        opt.step()
        return b.grad, b.detach().tolist(), "momentum_buffer" in opt.state[b]

    assert Simulator(N).run(node) == [(None, [1.0, 1.0], False)] * N


def test_pmsgd_no_sync_accumulates_then_averages_once():
    def node(comm):
        p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = optim.PmSGD([p], lr=1.0, comm=comm)
        with opt.no_sync():
            (p * comm.rank).sum().backward()
        local = p.grad.tolist()
        (p * 10).sum().backward()
        return local, p.grad.tolist()

    for rank, (local, averaged) in enumerate(Simulator(N).run(node)):
        assert local == [rank] * 2
        assert averaged == [sum(range(N)) / N + 10] * 2


# ------------------------------------------------------------------ missing gradients, the contract


def test_dsgd_parameter_without_gradient_takes_no_local_step_but_is_gossiped():
    def node(comm):
        a = torch.full((2,), float(comm.rank), dtype=torch.float64, requires_grad=True)
        b = torch.full((2,), float(comm.rank), dtype=torch.float64, requires_grad=True)
        opt = optim.DmSGD([a, b], lr=0.1, momentum=0.5, topology=T.ring(N), comm=comm)
        (a.sum() if comm.rank % 2 else (a + b).sum()).backward()
        opt.step()
        return a.tolist(), b.tolist(), "momentum_buffer" in opt.state[b]

    W = T.ring(N).W
    x = np.arange(N, dtype=float)
    has_b = np.array([r % 2 == 0 for r in range(N)])
    want_a, want_b = W @ (x - 0.1), W @ (x - 0.1 * has_b)
    for rank, (a, b, b_state) in enumerate(Simulator(N).run(node)):
        np.testing.assert_allclose(a, [want_a[rank]] * 2, rtol=0, atol=1e-15)
        np.testing.assert_allclose(b, [want_b[rank]] * 2, rtol=0, atol=1e-15)
        assert b_state == has_b[rank]


def test_one_keyword_contract():
    comm = Simulator(2).comms[0]
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(TypeError):
        optim.DmSGD(p, 0.1, 0.9)                           # momentum is keyword-only
    with pytest.raises(TypeError, match="unexpected keyword argument 'period'.*variant='atc'"):
        optim.DmSGD(p, lr=0.1, period=3, comm=comm)

    def node(comm):
        assert optim.DSGD([torch.zeros(3, requires_grad=True)], lr=0.1, variant="yu", comm=comm).defaults["variant"] == "yu"
        opt = optim.LocalSGD([torch.zeros(3, requires_grad=True)], lr=0.1, comm=comm)
        with pytest.raises(RuntimeError, match="pass every parameter group to the constructor"):
            opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)]})

    Simulator(2).run(node)


def test_localsgd_reads_momentum_and_period_from_each_group():
    def node(comm):
        a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
        opt = optim.LocalSGD([{"params": [a], "momentum": 0.9}, {"params": [b], "period": 2}], lr=0.1, comm=comm)
        (a.sum() + b.sum()).backward()
        return [t.numel() for t in opt._to_send(opt._buckets[0].pairs)]

    # step 0: a's group averages (period 1) with its momentum; b's (period 2, momentum 0) waits
    assert Simulator(2).run(node) == [[2, 2]] * 2


def test_ranks_building_different_optimizers_get_one_clear_error():
    def node(comm):
        p = [torch.zeros(3, requires_grad=True)]
        return optim.by_name("DSGD" if comm.rank == 0 else "DmSGD")(p, lr=0.1, comm=comm, momentum=0.5)

    with pytest.raises(RuntimeError, match="the algorithm differs between ranks: 'DSGD' on rank 0, 'DmSGD' on rank 1"):
        Simulator(2).run(node)

    def period(comm):
        return optim.LocalSGD([torch.zeros(3, requires_grad=True)], lr=0.1, comm=comm, period=1 + comm.rank)

    with pytest.raises(RuntimeError, match="the algorithm.s options differs between ranks"):
        Simulator(2).run(period)
