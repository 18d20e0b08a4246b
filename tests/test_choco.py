"""CHOCO-SGD and its compressors on the simulator: properties, the dense recursion, bytes."""

import math

import numpy as np
import pytest
import torch

from choco_oracle import dense_choco_trajectory, lazy_fixed_point
from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from mpidec.comm import compress
from oracles import LeastSquares, count_at_the_transport, dense_trajectory

N, LR, STEPS = 6, 0.05, 120


def run(problem, topo, steps, algorithm="CHOCO", **kwargs):
    results = Simulator(problem.n).run(problem.worker, algorithm, steps, lr=LR, topology=topo, **kwargs)
    return np.stack([traj for traj, _ in results]), [opt for _, opt in results]


# ------------------------------------------------------------------ compressors

def vectors(dtype=torch.float64, count=20, size=1000):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(size, generator=g, dtype=torch.float64).mul(float(s)).to(dtype)
            for s in torch.logspace(-3, 3, count, dtype=torch.float64)]


@pytest.mark.parametrize("name", list(compress.COMPRESSORS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("size", [1, 7, 1000])
def test_payload_has_the_announced_size_and_decodes_alike_everywhere(name, dtype, size):
    q = compress.make(name, 0.1)
    x = torch.randn(size, generator=torch.Generator().manual_seed(size), dtype=torch.float64).to(dtype)
    payload = q.encode(x, key=(1, 2, 3), rank=0)
    assert payload.dtype == torch.uint8 and payload.numel() == q.nbytes(size, dtype)
    offset = torch.zeros(payload.numel() + 3, dtype=torch.uint8)  # a row received at an unaligned offset
    offset[3:] = payload
    a, b = torch.zeros(size, dtype=dtype), torch.zeros(size, dtype=dtype)
    q.decode_add_(payload, a, 1.0, key=(1, 2, 3))
    q.decode_add_(offset[3:], b, 1.0, key=(1, 2, 3))
    assert torch.equal(a, b) and torch.equal(a, q(x, key=(1, 2, 3)))


def test_identity_is_exact():
    for x in vectors():
        assert torch.equal(compress.make("identity")(x), x)


@pytest.mark.parametrize("ratio", [0.001, 0.01, 0.1, 0.5])
def test_top_k_keeps_the_largest_and_contracts_by_k_over_n(ratio):
    q = compress.make("top_k", ratio)
    for x in vectors():
        k = math.ceil(ratio * x.numel())
        got = q(x)
        assert int((got != 0).sum()) == k
        assert got.abs().min() == 0 and x.abs()[got != 0].min() >= x.abs()[got == 0].max()
        assert torch.equal(got[got != 0], x[got != 0])
        error, bound = float((got - x).norm() ** 2), (1 - k / x.numel()) * float(x.norm() ** 2)
        assert error <= bound * (1 + 1e-12)


def test_random_k_draws_shared_indices_and_contracts_in_expectation():
    q, x = compress.make("random_k", 0.05), vectors(count=1)[0]
    k, n = math.ceil(0.05 * x.numel()), x.numel()
    assert torch.equal(q(x, key=(7, 3, 1), rank=0) != 0, q(x.neg(), key=(7, 3, 1), rank=5) != 0)  # any rank, any x
    assert not torch.equal(q(x, key=(7, 3, 1)) != 0, q(x, key=(7, 4, 1)) != 0)                    # a new step: new ones
    errors = [float((q(x, key=(0, t, 0)) - x).norm() ** 2) for t in range(400)]
    want = (1 - k / n) * float(x.norm() ** 2)
    assert abs(np.mean(errors) - want) < 4 * np.std(errors) / np.sqrt(len(errors))


def test_scaled_sign_error_is_its_closed_form():
    q = compress.make("sign")
    for x in vectors() + [torch.tensor([0.0, 1.0, -2.0, 0.0], dtype=torch.float64)]:
        n, l1, l2 = x.numel(), float(x.abs().sum()), float(x.norm() ** 2)
        error = float((q(x) - x).norm() ** 2)
        np.testing.assert_allclose(error, l2 - l1 ** 2 / n, rtol=1e-9, atol=1e-12 * l2)
        assert error <= (1 - 1 / n) * l2 * (1 + 1e-12)


def test_stochastic_int8_is_unbiased_with_bounded_variance():
    q, x = compress.make("int8"), vectors(size=200, count=1)[0]
    scale = float(x.abs().max()) / 127
    draws = torch.stack([q(x, key=(0, t, 0), rank=1) for t in range(2000)])
    assert ((draws / scale).round() - draws / scale).abs().max() < 1e-3       # integer multiples of the scale
    assert float((draws - x).abs().max()) <= scale * (1 + 1e-6)               # a neighbour of x on the grid
    sd_bound = scale / 2 / math.sqrt(len(draws))                              # Var Q(x)_l = s^2 f (1 - f) <= s^2 / 4
    assert float((draws.mean(0) - x).abs().max()) < 5 * sd_bound              # unbiased, per element
    assert abs(float((draws.mean(0) - x).mean())) < 5 * sd_bound / math.sqrt(x.numel())
    assert float(((draws - x) ** 2).sum(1).mean()) <= x.numel() * scale ** 2 / 4
    assert not torch.equal(q(x, key=(0, 0, 0), rank=0), q(x, key=(0, 0, 0), rank=1))  # independent ranks


def test_compressors_refuse_bad_names_and_ratios():
    with pytest.raises(ValueError, match="unknown compressor 'topk'; choose one of identity, top_k"):
        compress.make("topk")
    with pytest.raises(ValueError, match="invalid ratio 0"):
        compress.make("top_k", 0)


# ------------------------------------------------------------------ CHOCO against DSGD and the dense rule

@pytest.mark.parametrize("topo", [T.ring(N), T.exponential(N)], ids=["ring", "exponential"])
@pytest.mark.parametrize("momentum", [0.0, 0.8])
def test_identity_with_gamma_one_is_dsgd(topo, momentum):
    problem = LeastSquares(N, seed=1)
    got, _ = run(problem, topo, STEPS, compressor="identity", gamma=1.0, momentum=momentum)
    want = dense_trajectory(problem, "DmSGD", topo, STEPS, LR, momentum=momentum)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.abs(want[:, -1] - want[:, 0]).max() > 0.1


def test_identity_with_gamma_is_dsgd_on_the_lazier_matrix():
    problem, topo, gamma = LeastSquares(N, seed=2), T.ring(N), 0.4
    got, _ = run(problem, topo, STEPS, compressor="identity", gamma=gamma)
    lazier = T.from_matrix((1 - gamma) * np.eye(N) + gamma * topo.W)
    np.testing.assert_allclose(got, dense_trajectory(problem, "DSGD", lazier, STEPS, LR), rtol=0, atol=1e-12)


@pytest.mark.parametrize("compressor, ratio, gamma, momentum", [
    ("top_k", 0.3, 0.3, 0.0), ("top_k", 0.5, 0.5, 0.8), ("sign", 1.0, 0.4, 0.0), ("sign", 1.0, 0.3, 0.8)])
def test_compressed_trajectory_equals_the_dense_rule(compressor, ratio, gamma, momentum):
    problem, topo = LeastSquares(N, seed=3), T.ring(N)
    options = dict(compressor=compressor, ratio=ratio, gamma=gamma)
    got, _ = run(problem, topo, STEPS, momentum=momentum, **options)
    want = dense_choco_trajectory(problem, topo, STEPS, LR, momentum=momentum, **options)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


class SeparableQuadratic:
    """f_i(x) = 0.5 sum_d H[i, d] (x_d - c[i, d])^2: heterogeneous optima; two parameters of ``dim / 2``."""

    def __init__(self, n, dim, seed=0):
        rng = np.random.default_rng(seed)
        self.n, self.dim = n, dim
        self.H = rng.uniform(0.5, 2.0, (n, dim))
        self.c = rng.standard_normal((n, dim)) * 3 + np.arange(n)[:, None]

    def worker(self, comm, steps, **kwargs):
        i, half = comm.rank, self.dim // 2
        params = [torch.zeros(half, dtype=torch.float64, requires_grad=True) for _ in range(2)]
        H, c = torch.tensor(self.H[i]), torch.tensor(self.c[i])
        opt = optim.CHOCO(params, comm=comm, **kwargs)
        for _ in range(steps):
            opt.zero_grad()
            (0.5 * (H * (torch.cat(params) - c) ** 2).sum()).backward()
            opt.step()
        return torch.cat(params).detach().numpy(), opt


def test_top_one_percent_converges_to_dsgds_point():
    """Each parameter (100 values) sends 1 value a step, and CHOCO still reaches the fixed
    point of DSGD on ``(1 - gamma) I + gamma W`` (the compression error is fed back)."""
    n, dim, lr, gamma = 4, 200, 0.3, 0.05
    problem, topo = SeparableQuadratic(n, dim), T.ring(n)
    results = Simulator(n).run(problem.worker, 1000, lr=lr, topology=topo, compressor="top_k", ratio=0.01,
                                     gamma=gamma)
    got = np.stack([x for x, _ in results])
    want = lazy_fixed_point(problem.H, problem.c, topo.W, lr, gamma)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert np.abs(want).max() > 1 and results[0][1].last_step_bytes == 2 * 2 * (8 + 4)  # 2 neighbours, 2 x (1 value + 1 index)


# ------------------------------------------------------------------ bytes on the wire

def bytes_per_step(compressor, ratio, size=10_000, n=4, dtype=torch.float32):
    def node(comm):
        sent = count_at_the_transport(comm)
        p = torch.zeros(size, dtype=dtype, requires_grad=True)
        opt = optim.CHOCO([p], lr=0.1, comm=comm, topology=T.ring(n), compressor=compressor, ratio=ratio, gamma=0.5)
        p.grad = torch.randn(size, generator=torch.Generator().manual_seed(comm.rank), dtype=dtype)
        opt.step()
        return sent[0], opt.last_step_bytes

    return Simulator(n).run(node)[0]


def test_bytes_on_the_wire_are_the_compressed_payload():
    measured = {c: bytes_per_step(c, r) for c, r in [("identity", 1), ("top_k", 0.01), ("random_k", 0.01),
                                                      ("sign", 1), ("int8", 1)]}
    for name, (wire, reported) in measured.items():
        assert wire == reported, name                               # the optimizer reports what went through
    dense = measured["identity"][0]
    assert dense == 2 * 10_000 * 4                                  # ring: 2 neighbours, float32
    ratios = {name: wire / dense for name, (wire, _) in measured.items()}
    assert ratios["top_k"] == pytest.approx(0.01 * 2)               # value + int32 index
    assert ratios["random_k"] == pytest.approx(0.01)                # values only: shared indices
    assert ratios["sign"] == pytest.approx(1 / 32, abs=2e-4)        # bits and one scale
    assert ratios["int8"] == pytest.approx(1 / 4, rel=1e-3)


# ------------------------------------------------------------------ resume, bad input

def test_resume_from_state_dict_is_exact():
    problem, topo = LeastSquares(N, seed=4), T.ring(N)
    options = dict(compressor="top_k", ratio=0.5, gamma=0.5, momentum=0.5)
    straight, _ = run(problem, topo, 10, **options)

    def node(comm):
        first, opt = problem.worker(comm, "CHOCO", 5, lr=LR, topology=topo, **options)
        state = opt.state_dict()
        params = [torch.tensor(first[-1][:4], requires_grad=True), torch.tensor(first[-1][4:], requires_grad=True)]
        resumed = optim.CHOCO(params, lr=LR, topology=topo, comm=comm, **options)
        resumed.load_state_dict(state)
        A, b = torch.tensor(problem.A[comm.rank]), torch.tensor(problem.b[comm.rank])
        for _ in range(5):
            resumed.zero_grad()
            (0.5 * ((A @ torch.cat(params) - b) ** 2).sum()).backward()
            resumed.step()
        return torch.cat(params).detach().numpy()

    got = np.stack(Simulator(N).run(node))
    np.testing.assert_array_equal(got, straight[:, -1])


@pytest.mark.parametrize("kwargs, message", [
    ({"compressor": "topk"}, "unknown compressor 'topk'"),
    ({"ratio": 0.0}, "invalid ratio 0.0"),
    ({"gamma": 1.5}, "invalid gamma 1.5"),
    ({"seed": 0.5}, "invalid seed 0.5"),
    ({"topology": T.one_peer_exponential(4)}, "needs a static topology"),
    ({"wire_dtype": torch.bfloat16}, "CHOCO takes no wire_dtype"),
    ({"consensus_control": object()}, "CHOCO takes no consensus_control"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    def node(comm):
        optim.CHOCO([torch.zeros(3, requires_grad=True)], lr=0.1, comm=comm, **kwargs)

    with pytest.raises(RuntimeError) as info:
        Simulator(4).run(node)
    assert message in str(info.value.__cause__)
