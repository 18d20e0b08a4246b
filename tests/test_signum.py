"""signSGD / Signum with majority vote: packing, the vote's closed form, ties, bytes."""

import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec.comm import Simulator
from mpidec.comm import bits
from oracles import vote_closed_form


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 65, 1000])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_packing_round_trips_for_every_length_and_dtype(n, dtype):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(dtype)
    packed = bits.pack_signs(x)
    assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
    want = torch.where(x >= 0, 1.0, -1.0)
    assert torch.equal(bits.unpack_signs(packed, n), want)


def test_packing_layout_is_little_endian_within_a_byte():
    x = torch.tensor([1.0, -1, -1, -1, -1, -1, -1, 1, 0.0])  # bits 0 and 7, then a zero (counts as +)
    assert bits.pack_signs(x).tolist() == [0b10000001, 0b00000001]


@pytest.mark.parametrize("n", [3, 4])  # odd: no ties; even: ties
def test_update_equals_minus_lr_times_the_vote_ties_included(n):
    dim, lr = 37, 0.1
    g = torch.Generator().manual_seed(n)
    grads = [torch.randint(-1, 2, (dim,), generator=g).double() for _ in range(n)]  # many exact ties at 0
    x0 = torch.randn(dim, generator=g, dtype=torch.float64)

    def node(comm):
        p = x0.clone().requires_grad_()
        opt = optim.SignumMV([p], lr=lr, momentum=0.0, comm=comm)
        p.grad = grads[comm.rank].clone()
        opt.step()
        return p.detach().numpy()

    results = Simulator(n).run(node)
    want = x0.numpy() - lr * vote_closed_form([g.numpy() for g in grads])
    for got in results:
        np.testing.assert_array_equal(got, want)
    if n % 2 == 0:
        assert (np.stack([g.numpy() >= 0 for g in grads]).sum(0) * 2 == n).any()  # the data has ties


def test_signum_uses_the_momentum_sign_and_decoupled_weight_decay():
    n, dim, lr, wd, beta = 3, 20, 0.05, 0.1, 0.9
    g = torch.Generator().manual_seed(1)
    steps = [[torch.randn(dim, generator=g, dtype=torch.float64) for _ in range(n)] for _ in range(3)]
    x0 = torch.randn(dim, generator=g, dtype=torch.float64)

    def node(comm):
        p = x0.clone().requires_grad_()
        opt = optim.SignumMV([p], lr=lr, momentum=beta, weight_decay=wd, comm=comm)
        for grads in steps:
            p.grad = grads[comm.rank].clone()
            opt.step()
        return p.detach().numpy()

    x, m = x0.numpy().copy(), [np.zeros(dim)] * n
    for grads in steps:
        m = [beta * mi + gi.numpy() for mi, gi in zip(m, grads)]
        x = x - lr * (vote_closed_form(m) + wd * x)
    for got in Simulator(n).run(node):
        np.testing.assert_allclose(got, x, rtol=0, atol=1e-15)


def test_bytes_on_the_wire_are_a_thirty_second_of_a_float32_allreduce():
    n, params = 4, 1_000_000
    shard = 8 * bits.packed_size(-(-params // n))
    sent_vote = 2 * (n - 1) * shard // 8                # all-to-all and allgather, each (n - 1) shards
    sent_allreduce = 2 * (n - 1) * (params // n) * 4    # ring allreduce of float32
    assert sent_allreduce / sent_vote >= 31.9


def test_starting_the_vote_does_not_wait_for_the_other_ranks():
    """``majority_vote_async`` only starts the all-to-all: node 0 starts its vote and goes on
    before node 1 has started its own (node 1 waits for that), and both get the vote."""
    import threading

    signals, started = [torch.tensor([1.0, -1.0, 3.0]), torch.tensor([-1.0, 1.0, 1.0])], threading.Event()

    def node(comm):
        out = torch.empty(3)
        if comm.rank == 1:
            assert started.wait(30), "node 0's start waited for node 1"
        handle = comm.majority_vote_async([signals[comm.rank]], [out])
        started.set()
        handle.wait()
        return out.numpy()

    want = vote_closed_form([s.numpy() for s in signals])
    for out in Simulator(2, timeout=30).run(node):
        np.testing.assert_array_equal(out, want)
