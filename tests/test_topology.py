"""Topologies: closed forms, invariants of every builder, clear errors."""

import math

import networkx as nx
import numpy as np
import pytest

from mpidec import topology as T


@pytest.mark.parametrize("n", [3, 5, 8, 16, 33])
def test_ring_spectral_gap_closed_form(n):
    # eigenvalues of the 1/3 ring are 1/3 + 2/3 cos(2 pi k / n)
    assert 1 - T.lambda2(T.ring(n).W) == pytest.approx((2 / 3) * (1 - math.cos(2 * math.pi / n)), abs=1e-12)


@pytest.mark.parametrize("n", [2, 4, 8, 16, 64])
def test_one_peer_exponential_is_exact_averaging_over_a_period(n):
    sched = T.one_peer_exponential(n)
    assert sched.period == int(math.log2(n))
    np.testing.assert_allclose(T.period_product(sched), np.full((n, n), 1 / n), atol=1e-15)
    assert all(len(sched.at(t).in_neighbors(0)) == 1 for t in range(sched.period))


def test_one_peer_exponential_not_power_of_two_is_not_exact():
    assert T.contraction(T.period_product(T.one_peer_exponential(6))) > 0.1


def test_metropolis_hastings_on_irregular_graph_is_doubly_stochastic():
    g = nx.lollipop_graph(5, 4)  # degrees 1 to 5
    topo = T.from_networkx(g)
    assert len({d for _, d in g.degree}) > 2
    assert T.is_doubly_stochastic(topo.W) and T.is_symmetric(topo.W)
    np.testing.assert_allclose(topo.W.sum(0), 1, atol=1e-15)
    assert (topo.W >= 0).all()


@pytest.mark.parametrize("name", [k for k in T.BUILDERS if k != "hypercube"])
@pytest.mark.parametrize("n", [1, 2, 5, 8, 12])
def test_every_builder_gives_doubly_stochastic_steps(name, n):
    topo = T.build(name, n)
    for t in range(4):
        w = topo.at(t).W
        assert w.shape == (n, n)
        assert T.is_doubly_stochastic(w)
        for i in range(n):
            assert topo.at(t).in_neighbors(i) == [j for j in range(n) if j != i and w[i, j] > 0]


@pytest.mark.parametrize("name", ["ring", "torus", "exponential", "symmetric_exponential", "complete", "star"])
def test_static_builders_contract(name):
    w = T.build(name, 12).W
    assert T.is_connected(w) and T.contraction(w) < 1


def test_exponential_neighbours_at_powers_of_two():
    topo = T.exponential(16)
    assert topo.in_neighbors(3) == [4, 5, 7, 11]
    assert topo.out_neighbors(3) == [1, 2, 11, 15]
    np.testing.assert_allclose(topo.W[3, [3, 4, 5, 7, 11]], 1 / 5)


def test_torus_default_and_given_shape():
    assert T.torus(12).name == "torus3x4"
    assert T.torus(12, shape=(2, 6)).in_neighbors(0) == [1, 5, 6]
    assert T.torus(7).name == "torus1x7"  # prime: a ring


def test_random_matching_is_the_same_for_the_same_seed_and_pairs_everyone():
    a, b = T.random_matching(10, seed=7), T.random_matching(10, seed=7)
    for t in range(5):
        np.testing.assert_array_equal(a.at(t).W, b.at(t).W)
        assert all(len(a.at(t).in_neighbors(i)) == 1 for i in range(10))
    assert not np.array_equal(a.at(0).W, a.at(1).W)


def test_lazy_weights_lift_lambda_min():
    w = T.ring(8).W
    assert T.lambda_min(w) == pytest.approx(-1 / 3)
    assert T.lambda_min(T.lazy(w)) == pytest.approx(1 / 3)


def test_hypercube_and_spectral_figures():
    w = T.hypercube(8).W
    assert T.lambda2(w) == pytest.approx(0.5) and T.lambda_min(w) == pytest.approx(-0.5)
    assert T.spectral_gap(w) == pytest.approx(0.5)


@pytest.mark.parametrize("w, message", [
    ([[0.5, 0.5], [0.4, 0.6]], "column 0 of W sums to 0.9"),
    ([[0.6, 0.5], [0.4, 0.5]], "row 0 of W sums to 1.1"),
    ([[1.5, -0.5], [-0.5, 1.5]], "negative weight W[0,1]"),
    ([[1.0, 0.0], [0.0, 1.0]], "not connected"),
    ([[1.0, 0.0, 0.0]], "square"),
    ([[float("nan"), 0.5], [0.5, 0.5]], "W[0,0] is nan; every weight must be a finite number"),
    ([[0.5, 0.5, 0.0], [0.5, 0.0, float("nan")], [0.0, float("nan"), 0.5]], "W[1,2] is nan"),
    ([[float("inf"), 0.5], [0.5, 0.5]], "W[0,0] is inf"),
    ([[0.5 + 0.1j, 0.5], [0.5, 0.5]], "complex entries"),
    ([[0.5, "a"], [0.5, 0.5]], "square matrix of numbers"),
    ([[0.5, 0.5], [1.0]], "square matrix of numbers"),
])
def test_bad_matrices_are_refused_with_the_reason(w, message):
    with pytest.raises(T.TopologyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        T.from_matrix(w)


@pytest.mark.parametrize("name", list(T.BUILDERS))
@pytest.mark.parametrize("n", [0, -3, 2.5, True, "4", None])
def test_every_builder_refuses_a_number_of_nodes_that_is_not_a_positive_whole_number(name, n):
    with pytest.raises(T.TopologyError, match=f"the number of nodes must be a whole number >= 1, got n={n!r}"):
        T.build(name, n)
    with pytest.raises(T.TopologyError, match="whole number >= 1"):
        T.BUILDERS[name](n)


def test_other_bad_input():
    with pytest.raises(T.TopologyError, match="torus shape 3x3 does not fit n=8"):
        T.torus(8, shape=(3, 3))
    with pytest.raises(T.TopologyError, match="power of two"):
        T.hypercube(6)
    with pytest.raises(T.TopologyError, match="unknown topology 'rign'"):
        T.build("rign", 4)
    with pytest.raises(T.TopologyError, match="has 8 nodes but the job has 4 ranks"):
        T.ring(8).check_size(4)
    with pytest.raises(T.TopologyError, match="not doubly stochastic|doubly"):
        T.from_networkx(nx.star_graph(4), weights="uniform")


def test_topology_command_prints_neighbours_spectrum_and_draws(tmp_path):
    import subprocess
    import sys

    png = tmp_path / "ring.png"
    out = subprocess.run([sys.executable, "-m", "mpidec", "topology", "ring", "-n", "5", "--plot", str(png)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "node   0  receives from [1, 4]  weights {0:0.3333, 1:0.3333, 4:0.3333}" in out.stdout
    assert f"spectral_gap: {1 - (1 / 3 + 2 / 3 * math.cos(2 * math.pi / 5)):.6g}" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "mpidec", "topology", "hypercube", "-n", "6"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "hypercube needs n a power of two, got n=6" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["ring", "-n", "0"], "the number of nodes must be a whole number >= 1, got n=0"),
    (["torus", "-n", "-4"], "got n=-4"),
    (["ring", "-n", "100000"], "-n 100000 is too large"),
    (["ring", "-n", "4", "--steps", "0"], "--steps must be >= 1"),
    (["ring", "-n", "4", "--plot", "/dev/null/ring.png"], "--plot /dev/null/ring.png: cannot write"),
])
def test_topology_command_bad_input_is_a_message_not_a_traceback(capsys, args, message):
    from mpidec import cli

    assert cli.main(["topology", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
