"""SVRG and Katyusha X against a numpy re-implementation of the algorithm (serial and simulator).

The oracle (``reference``) is written in the paper's form: one SVRG epoch from x~_k gives
y_{k+1}, then the extra line ``x~_{k+1} = (3/2 y_{k+1} + 1/2 x~_k - (1 - tau) y_k) / (1 + tau)``.
The problem is a sum of non-convex quadratics with a positive definite mean. Mini-batches
are drawn per shard, so the same index table serves 1, 2, 3, 4, 6 or 12 ranks: rank r of p
takes columns ``[r b/p, (r+1) b/p)``, all from its own shard.
"""

import io

import numpy as np
import pytest
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


# ------------------------------------------------------------------ tests

def test_problem_is_a_sum_of_nonconvex_functions():
    problem = SumOfNonconvex()
    assert all(np.linalg.eigvalsh(a).min() < 0 < np.linalg.eigvalsh(a).max() for a in problem.A)
    assert np.linalg.eigvalsh(problem.A.mean(0)).min() > 0.1


def test_the_extra_line_is_the_linear_coupling():
    """The one-line form equals the three-line coupling with sigma = 4 tau^2 / (m eta): the
    reconstruction of the line is the elimination of z, not a guess."""
    problem, batches = SumOfNonconvex(), stratified_batches()
    _, starts = reference(problem, batches, tau=TAU)
    np.testing.assert_allclose(starts, coupling_starts(problem, batches), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["SVRG", "KatyushaX"])
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_iterates_equal_the_numpy_algorithm(algorithm, ranks):
    """p simulated ranks, b/p terms each, follow the one-process algorithm with batch b."""
    problem, batches = SumOfNonconvex(), stratified_batches()
    want, _ = reference(problem, batches, tau=TAU if algorithm == "KatyushaX" else None)
    runs = Simulator(ranks).run(worker, algorithm, batches)
    for rank, got in enumerate(runs):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=f"rank {rank} of {ranks}")
        np.testing.assert_array_equal(got, runs[0])  # every rank holds the same x


def test_parallel_equals_serial_torch():
    """4 ranks with 3 terms each equal one torch process with the 12-term batch (same optimizer code)."""
    batches = stratified_batches()
    serial = worker(serial_comm(), "KatyushaX", batches)
    parallel = Simulator(4).run(worker, "KatyushaX", batches)[0]
    np.testing.assert_allclose(parallel, serial, rtol=1e-12, atol=1e-12)


def test_every_katyusha_epoch_is_an_svrg_epoch_from_its_start_point():
    """SVRG is Katyusha X without the extra line: from x~_k (the snapshot), one SVRG epoch on
    the same batches gives Katyusha X's inner iterates bit for bit."""
    problem, batches, comm = SumOfNonconvex(), stratified_batches(), serial_comm()
    params = problem.params()
    opt = make("KatyushaX", params, comm)
    full = problem.closure(params, np.arange(problem.n))
    for k in range(EPOCHS):
        opt.step(problem.closure(params, batches[k * M]), full_closure=full)
        start = problem.flat([opt.state[p]["snapshot"] for p in params])
        katyusha = [problem.flat(params)]
        for idx in batches[k * M + 1:(k + 1) * M]:
            opt.step(problem.closure(params, idx), full_closure=full)
            katyusha.append(problem.flat(params))
        svrg_params = problem.params(start)
        svrg = make("SVRG", svrg_params, comm)
        svrg_full = problem.closure(svrg_params, np.arange(problem.n))
        plain = []
        for idx in batches[k * M:(k + 1) * M]:
            svrg.step(problem.closure(svrg_params, idx), full_closure=svrg_full)
            plain.append(problem.flat(svrg_params))
        np.testing.assert_array_equal(katyusha, plain, err_msg=f"epoch {k}")
        if k == 0:
            np.testing.assert_array_equal(start, problem.x0)  # x~_0 = x_0: the first epoch is plain SVRG


def test_settings_are_read_at_step_time():
    """lr changed mid-epoch and tau changed between epochs reach the update."""
    problem, batches, comm = SumOfNonconvex(), stratified_batches(), serial_comm()
    lrs = np.full(EPOCHS * M, LR)
    lrs[4:] = 0.05
    taus = np.array([TAU, TAU, 0.6, 0.6, 0.6])
    params = problem.params()
    opt = make("KatyushaX", params, comm)
    full = problem.closure(params, np.arange(problem.n))
    got = []
    for t, idx in enumerate(batches):
        opt.param_groups[0]["lr"] = lrs[t]
        opt.param_groups[0]["tau"] = taus[t // M]
        opt.step(problem.closure(params, idx), full_closure=full)
        got.append(problem.flat(params))
    np.testing.assert_allclose(got, reference(problem, batches, lr=lrs, tau=taus)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("algorithm", ["SVRG", "KatyushaX"])
def test_resume_is_bit_identical(algorithm):
    """Stop mid-epoch (after 7 of 15 steps), save, rebuild, load, continue: the same bits."""
    problem, batches, comm = SumOfNonconvex(), stratified_batches(), serial_comm()
    want = worker(comm, algorithm, batches)
    params = problem.params()
    opt = make(algorithm, params, comm)
    full = problem.closure(params, np.arange(problem.n))
    for idx in batches[:7]:
        opt.step(problem.closure(params, idx), full_closure=full)
    buf = io.BytesIO()
    torch.save({"x": problem.flat(params), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    params = problem.params(saved["x"])
    opt = make(algorithm, params, comm, lr=1.0, m=5, tau=0.9)  # the checkpoint's settings win
    opt.load_state_dict(saved["opt"])
    full = problem.closure(params, np.arange(problem.n))
    got = []
    for idx in batches[7:]:
        opt.step(problem.closure(params, idx), full_closure=full)
        got.append(problem.flat(params))
    np.testing.assert_array_equal(got, want[7:])


def test_katyusha_x_converges_to_the_minimiser_faster_than_svrg():
    """A sanity check of the oracle itself: with the paper's tau (sigma = 0.2), y_k reaches x*
    and SVRG at the same lr, batches and epochs is far behind."""
    problem = SumOfNonconvex()
    m, lr, epochs = 4, 0.2, 100
    batches = np.random.default_rng(3).integers(0, problem.n, size=(epochs * m, BATCH))
    x_star = problem.minimiser()
    error = {name: np.linalg.norm(reference(problem, batches, epochs=epochs, m=m, lr=lr, tau=tau)[0][-1] - x_star)
             / np.linalg.norm(x_star) for name, tau in [("KatyushaX", np.sqrt(m * lr * 0.2) / 2), ("SVRG", None)]}
    assert error["KatyushaX"] < 1e-10
    assert error["SVRG"] > 100 * error["KatyushaX"]


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(tau=0.0), "tau = 0 is not SVRG"),
    (dict(tau=-0.1), "invalid tau"),
    (dict(tau=1.5), "invalid tau"),
    (dict(tau="0.2"), "invalid tau"),
    (dict(epoch_length=0), "invalid epoch_length 0"),
    (dict(epoch_length=2.5), "invalid epoch_length"),
    (dict(epoch_length=True), "invalid epoch_length"),
    (dict(lr=-1.0), "invalid lr"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    args = dict(lr=LR, epoch_length=M, tau=TAU, comm=serial_comm()) | kwargs
    with pytest.raises(ValueError, match=match):
        KatyushaX(SumOfNonconvex().params(), **args)


def test_bad_settings_in_param_groups_are_caught_at_the_epoch_start():
    problem, comm = SumOfNonconvex(), serial_comm()
    params = problem.params()
    opt = make("KatyushaX", params, comm)
    opt.param_groups[0]["tau"] = 2.0
    with pytest.raises(ValueError, match="invalid tau 2.0"):
        opt.step(problem.closure(params, [0]), full_closure=problem.closure(params, [0, 1]))
    a, b = problem.params()
    opt = KatyushaX([{"params": [a]}, {"params": [b], "epoch_length": 5}], lr=LR, epoch_length=M, tau=TAU,
                    comm=comm)
    with pytest.raises(ValueError, match=r"same epoch_length.*\[3, 5\]"):
        opt.step(problem.closure([a, b], [0]), full_closure=problem.closure([a, b], [0, 1]))


@pytest.mark.parametrize("which", ["closure", "full_closure"])
def test_a_closure_returning_no_loss_is_a_clear_error(which):
    problem, comm = SumOfNonconvex(), serial_comm()
    params = problem.params()
    opt = make("SVRG", params, comm)
    good = problem.closure(params, [0, 1])

    def forgot_return():
        good()

    closures = {"closure": good, "full_closure": good} | {which: forgot_return}
    with pytest.raises(TypeError, match=f"{which} returned None: it must .* return the loss"):
        opt.step(closures["closure"], full_closure=closures["full_closure"])
