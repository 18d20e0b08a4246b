"""SVRG and Katyusha X against a numpy re-implementation of the algorithm (serial and
simulator); the oracle, the problem and one rank's run are in tests/katyusha_oracle.py."""

import io

import numpy as np
import pytest
import torch

from katyusha_oracle import (BATCH, EPOCHS, LR, TAU, M, SumOfNonconvex, coupling_starts, make, reference, serial_comm,
                             stratified_batches, worker)
from mpidec.comm import Simulator
from mpidec.optim import KatyushaX


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
