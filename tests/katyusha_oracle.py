"""The oracle of the SVRG and Katyusha X tests (serial, simulator and MPI): a numpy
re-implementation of the algorithm in the paper's form, the problem, and one rank's run.

``reference``: one SVRG epoch from x~_k gives y_{k+1}, then the extra line
``x~_{k+1} = (3/2 y_{k+1} + 1/2 x~_k - (1 - tau) y_k) / (1 + tau)``. The problem is a sum of
non-convex quadratics with a positive definite mean. Mini-batches are drawn per shard, so
the same index table serves 1, 2, 3, 4, 6 or 12 ranks: rank r of p takes columns
``[r b/p, (r+1) b/p)``, all from its own shard.
"""

import numpy as np
import torch

from mpidec.comm import Simulator
from mpidec.optim import SVRG, KatyushaX

LR, M, EPOCHS, TAU = 0.1, 3, 5, 0.3
N, BATCH, SHARDS = 48, 12, 12


class SumOfNonconvex:
    """f(x) = (1/n) sum_i 1/2 x^T A_i x + b_i^T x; every A_i indefinite, their mean positive definite."""

    def __init__(self, n=N, dim=6, seed=0):
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        mean = q @ np.diag(np.linspace(0.2, 1.0, dim)) @ q.T
        e = rng.standard_normal((n, dim, dim))
        e = (e + e.transpose(0, 2, 1)) / 2
        self.A = mean + e - e.mean(0)
        self.b = rng.standard_normal((n, dim))
        self.x0 = rng.standard_normal(dim)
        self.n, self.dim = n, dim
        self._A, self._b = torch.from_numpy(self.A), torch.from_numpy(self.b)

    def grad(self, x, idx):
        """Mean of grad f_i(x) = A_i x + b_i over ``idx``."""
        return (self.A[idx] @ x + self.b[idx]).mean(0)

    def minimiser(self):
        return np.linalg.solve(self.A.mean(0), -self.b.mean(0))

    # torch side: the model is x split into a 2x2 and a 2-vector parameter
    def params(self, x=None):
        x = torch.tensor(self.x0 if x is None else x)
        return [x[:4].reshape(2, 2).clone().requires_grad_(), x[4:].clone().requires_grad_()]

    @staticmethod
    def flat(params):
        return torch.cat([p.detach().reshape(-1) for p in params]).numpy().copy()

    def closure(self, params, idx):
        A, b = self._A[torch.as_tensor(idx)], self._b[torch.as_tensor(idx)]

        def closure():
            x = torch.cat([p.reshape(-1) for p in params])
            loss = (0.5 * torch.einsum("i,kij,j->k", x, A, x) + b @ x).mean()
            loss.backward()
            return loss

        return closure


def stratified_batches(n=N, b=BATCH, shards=SHARDS, steps=EPOCHS * M, seed=1):
    """``steps x b`` indices; column c is drawn from shard ``c // (b / shards)`` of ``shards`` equal ones."""
    rng = np.random.default_rng(seed)
    per = n // shards
    owner = np.repeat(np.arange(shards), b // shards)
    return owner * per + rng.integers(0, per, size=(steps, b))


# ------------------------------------------------------------------ the numpy oracle

def svrg_epoch(problem, start, batches, lrs):
    """SVRG^1ep: mu = grad f(x~); x <- x - eta (grad f_B(x) - grad f_B(x~) + mu); every iterate."""
    mu = problem.grad(start, np.arange(problem.n))
    x, iterates = start, []
    for idx, lr in zip(batches, lrs):
        x = x - lr * (problem.grad(x, idx) - problem.grad(start, idx) + mu)
        iterates.append(x)
    return iterates


def reference(problem, batches, epochs=EPOCHS, m=M, lr=LR, tau=None):
    """Katyusha X (SVRG when tau is None): every inner iterate, ``(epochs * m) x dim``, and the
    epoch start points x~_k. ``lr`` may be a sequence (per step), ``tau`` too (per epoch: the line
    that starts epoch k uses ``tau[k]``)."""
    lrs = np.broadcast_to(lr, epochs * m)
    taus = np.broadcast_to(tau if tau is not None else np.nan, epochs)
    x_tilde = y = problem.x0
    iterates, starts = [], []
    for k in range(epochs):
        starts.append(x_tilde)
        inner = svrg_epoch(problem, x_tilde, batches[k * m:(k + 1) * m], lrs[k * m:(k + 1) * m])
        iterates += inner
        y_next = inner[-1]
        if tau is None:
            x_tilde = y_next                                                  # SVRG: restart from y_{k+1}
        elif k + 1 < epochs:
            t = taus[k + 1]
            x_tilde = (1.5 * y_next + 0.5 * x_tilde - (1 - t) * y) / (1 + t)  # the extra line
        y = y_next
    return np.array(iterates), np.array(starts)


def coupling_starts(problem, batches, epochs=EPOCHS, m=M, lr=LR, tau=TAU):
    """The linear-coupling form: x~ = tau z + (1 - tau) y, g = (x~ - y+) / (m eta),
    z+ = argmin 1/(2 alpha) ||z - z_k||^2 + <g, z> + sigma/4 ||z - y+||^2 with alpha = m eta / (2 tau),
    sigma = 4 tau^2 / (m eta). Returns the epoch start points x~_0 .. x~_{epochs-1}."""
    sigma, alpha = 4 * tau ** 2 / (m * lr), m * lr / (2 * tau)
    y = z = x_tilde = problem.x0
    starts = []
    for k in range(epochs):
        starts.append(x_tilde)
        y_next = svrg_epoch(problem, x_tilde, batches[k * m:(k + 1) * m], [lr] * m)[-1]
        g = (x_tilde - y_next) / (m * lr)
        z = (z / alpha - g + sigma / 2 * y_next) / (1 / alpha + sigma / 2)
        y = y_next
        x_tilde = tau * z + (1 - tau) * y
    return np.array(starts)


# ------------------------------------------------------------------ one rank's run

def make(algorithm, params, comm, lr=LR, m=M, tau=TAU):
    if algorithm == "SVRG":
        return SVRG(params, lr=lr, epoch_length=m, comm=comm)
    return KatyushaX(params, lr=lr, epoch_length=m, tau=tau, comm=comm)


def rank_data(problem, comm, batches):
    """This rank's shard of the sum and its columns of every batch."""
    p, r, b = comm.size, comm.rank, batches.shape[1]
    shard = np.arange(r * problem.n // p, (r + 1) * problem.n // p)
    mine = batches[:, r * b // p:(r + 1) * b // p]
    assert np.isin(mine, shard).all()
    return shard, mine


def worker(comm, algorithm, batches, seed=0, **kwargs):
    """Rank ``comm.rank``: every iterate of a run on its shard and its part of each batch."""
    problem = SumOfNonconvex(seed=seed)
    shard, mine = rank_data(problem, comm, batches)
    params = problem.params()
    opt = make(algorithm, params, comm, **kwargs)
    full = problem.closure(params, shard)
    out = []
    for idx in mine:
        opt.step(problem.closure(params, idx), full_closure=full)
        out.append(problem.flat(params))
    return np.array(out)


def serial_comm():
    return Simulator(1).comms[0]
