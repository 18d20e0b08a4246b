"""SignumMV on 4 MPI ranks: the vote's closed form, equality with the simulator, accuracy near PmSGD."""

import numpy as np
import pytest
import torch

from mpidec import optim
from mpidec.comm import Simulator
from oracles import vote_closed_form

pytestmark = pytest.mark.mpi(min_size=2)


def vote_worker(comm, grads, x0, lr):
    p = x0.clone().requires_grad_()
    opt = optim.SignumMV([p], lr=lr, momentum=0.0, comm=comm)
    for step_grads in grads:
        p.grad = step_grads[comm.rank].clone()
        opt.step()
    return p.detach().numpy()


def test_vote_under_mpi_equals_closed_form_and_simulator(comm):
    n, dim, lr = comm.size, 1001, 0.1
    g = torch.Generator().manual_seed(5)
    grads = [[torch.randint(-1, 2, (dim,), generator=g).float() for _ in range(n)] for _ in range(2)]
    x0 = torch.randn(dim, generator=g)
    mine = vote_worker(comm, grads, x0, lr)
    want = x0.numpy()
    for step_grads in grads:
        want = want - np.float32(lr) * vote_closed_form([s.numpy() for s in step_grads]).astype(np.float32)
    np.testing.assert_allclose(mine, want, atol=1e-6)
    simulated = Simulator(n).run(vote_worker, grads, x0, lr)
    np.testing.assert_array_equal(mine, simulated[comm.rank])


def digits_accuracy(comm, algorithm, lr, steps=150):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    test, train = slice(0, 360), np.arange(360, len(y))[comm.rank::comm.size]
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    init = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=init) * 0.2)
    opt = optim.by_name(algorithm)(net.parameters(), lr=lr, momentum=0.9, comm=comm)
    g = torch.Generator().manual_seed(comm.rank)
    for _ in range(steps):
        idx = torch.tensor(train)[torch.randint(0, len(train), (32,), generator=g)]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        return float((net(X[test]).argmax(1) == y[test]).float().mean())


def test_signum_reaches_accuracy_close_to_pmsgd_on_digits(comm):
    signum = digits_accuracy(comm, "SignumMV", lr=0.003)
    pmsgd = digits_accuracy(comm, "PmSGD", lr=0.1)
    if comm.rank == 0:
        print(f"\ndigits, 4 ranks, 150 steps: SignumMV {signum:.3f}, PmSGD {pmsgd:.3f}")
    assert pmsgd > 0.9
    assert signum > pmsgd - 0.05
