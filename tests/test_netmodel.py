"""The network clock (mpidec.netmodel) against closed forms, and the `mpidec plan` command."""

import math

import numpy as np
import pytest

from mpidec import netmodel as M
from mpidec import topology as T

S, B, ALPHA, O = 8e6, 1e9, 50e-6, 3e-6  # bytes, bytes/s, s, s


def net(hosts, per_host=1, **kwargs):
    return M.Network(hosts, per_host, bandwidth=B, latency=ALPHA, overhead=O, **kwargs)


def test_a_hosts_link_is_shared_by_its_ranks():
    one = M.message_times(net(2), [0], [1], S)
    assert one[0] == pytest.approx(O + ALPHA + S / B)
    two = M.message_times(net(2, 2), [0, 1], [2, 3], S)  # both cross host 0's uplink
    np.testing.assert_allclose(two, O + ALPHA + 2 * S / B)
    local = M.message_times(net(1, 2, local_bandwidth=4e9, local_latency=1e-6), [0], [1], S)
    assert local[0] == pytest.approx(O + 1e-6 + S / 4e9)


def test_the_probed_exchanges_closed_forms():
    """What benchmarks/cluster.py probes: a ring round (every host sends 2 models up and
    receives 2 down), a one-peer round (1 each way), and one AD-PSGD average."""
    ring = M.gossip_round_time(net(4), T.ring(4).at(0), S)
    assert ring == pytest.approx(2 * O + ALPHA + 2 * S / B)
    peer = T.one_peer_exponential(4)
    assert [M.gossip_round_time(net(4), peer.at(t), S) for t in range(2)] == pytest.approx([O + ALPHA + S / B] * 2)
    rma = 1e-4
    assert M.average_time(net(4, rma_latency=rma), 0, 3, S) == pytest.approx(4 * rma + 2 * S / B)
    slowed = net(4, rma_latency=rma, slow=((3, 8),))
    assert M.average_time(slowed, 0, 3, S, crossing=(0, 1)) == pytest.approx(4 * rma + 32 * S / B)
    # the probe's AD-PSGD averages on 2 hosts x 2: (0, 3) and (2, 1) both cross both links
    two_by_two = net(2, 2, rma_latency=rma)
    assert M.concurrent_averages_time(two_by_two, [(0, 3), (2, 1)], S) == pytest.approx(4 * rma + 4 * S / B)
    local = net(2, 2, local_bandwidth=4e9, local_latency=1e-6)
    assert M.average_time(local, 0, 1, S) == pytest.approx(4e-6 + 2 * S / 4e9)


def test_a_slow_link_slows_only_the_messages_that_cross_it():
    times = M.message_times(net(3, slow=((2, 8),)), [0, 1], [1, 2], S)
    np.testing.assert_allclose(times, [O + ALPHA + S / B, O + ALPHA + 8 * S / B])


def test_ring_allreduce_closed_form():
    n = 6
    expected = 2 * (n - 1) * (O + ALPHA + S / n / B)
    assert M.allreduce_time(net(n), S, "ring") == pytest.approx(expected)
    assert M.allreduce_time(net(n), S) <= expected  # auto: the cheapest


def test_small_allreduces_take_recursive_doubling():
    n = 8
    small = 8.0
    doubling = 3 * (O + ALPHA + small / B)
    assert M.allreduce_time(net(n), small, "recursive_doubling") == pytest.approx(doubling)
    assert M.allreduce_time(net(n), small) == pytest.approx(doubling)
    rabenseifner = 2 * sum(O + ALPHA + S / 2 ** (k + 1) / B for k in range(3))
    assert M.allreduce_time(net(n), S, "rabenseifner") == pytest.approx(rabenseifner)


def test_gossip_on_a_ring_is_compute_plus_the_slowest_in_neighbour():
    c = 0.01
    cost = M.step_cost(net(5), "DSGD", S, c, topology="ring")
    message = 2 * O + ALPHA + 2 * S / B  # each host sends to two neighbours and receives from two
    assert cost.step == pytest.approx(c + message)
    assert cost.compute == c and cost.communication == pytest.approx(message)


def test_a_straggler_slows_its_neighbours_at_the_max_cycle_mean():
    """Node clocks are a max-plus recursion: the slope is the largest cycle mean, here the
    slow node alone (c_s) or a round trip to a neighbour ((c_s + c) / 2 + m)."""
    c, message = 0.01, 2 * O + ALPHA + 2 * S / B
    for slow in (0.012, 0.1):
        compute = [c] * 6
        compute[3] = slow
        cost = M.step_cost(net(6), "DSGD", S, compute, topology="ring", steps=400)
        assert cost.step == pytest.approx(max(slow, (slow + c) / 2 + message), rel=1e-3)


def test_synchronous_algorithms_wait_for_the_slowest_rank():
    compute = [0.01, 0.01, 0.05, 0.01]
    cost = M.step_cost(net(4), "PmSGD", S, compute)
    assert cost.step == pytest.approx(0.05 + M.allreduce_time(net(4), S))
    local = M.step_cost(net(4), "LocalSGD", S, 0.01, period=5)
    assert local.step == pytest.approx(0.01 + M.allreduce_time(net(4), 2 * S) / 5)


def test_the_vote_sends_one_bit_per_parameter_in_shards():
    numel = int(S // 4)
    shard = math.ceil(numel / 2 / 8)
    message = O + ALPHA + shard / B  # two ranks: one shard each way, twice
    assert M.vote_time(net(2), numel) == pytest.approx(2 * message)
    assert M.step_cost(net(2), "SignumMV", S, 0.01).step == pytest.approx(0.01 + 2 * message)


def test_one_peer_exponential_costs_one_message_per_step():
    n = 8
    cost = M.step_cost(net(n), "DSGD", S, 0.01, topology="one_peer_exponential")
    assert cost.step == pytest.approx(0.01 + O + ALPHA + S / B)


def test_adpsgd_workers_step_at_their_own_pace():
    """Two workers on two hosts: the active one averages every step (4 RMA round trips and
    the model both ways: ``a``), the passive one computes and applies its step, waiting only
    while an average holds its model. The mean step is n / (sum of the workers' rates)."""
    c, a = 0.01, 4e-4 + 2 * S / B
    free = M.step_cost(net(2, rma_latency=0.0), "ADPSGD", 0.0, c, steps=4000)
    assert free.step == pytest.approx(c, rel=1e-3)
    # a slow passive worker does not hold the active one back (a synchronous step would take 8c)
    slow = M.step_cost(net(2, rma_latency=1e-4), "ADPSGD", S, [c, 8 * c], steps=4000)
    fastest, slowest = 2 / (1 / (c + a) + 1 / (8 * c)), 2 / (1 / (c + a) + 1 / (8 * c + a))
    assert fastest * 0.99 <= slow.step <= slowest * 1.01
    assert slow.step < 0.5 * M.step_cost(net(2), "DSGD", S, [c, 8 * c], topology="ring").step


def test_adpsgd_averages_share_the_busier_of_their_two_links():
    """Two hosts of two workers, each active worker with one passive partner on the other
    host: the two averages cross both links, so each link carries two at once and each
    average takes twice one alone (not three times: an average is not slowed by the same
    other average once per link). The passive workers compute for ever, the active ones
    for c: the mean step over the four is 2 (c + 2 a) (half the workers step)."""
    matching = T.Topology(np.array([[.5, 0, .5, 0], [0, .5, 0, .5], [.5, 0, .5, 0], [0, .5, 0, .5]]),
                          connected=False)
    assert M.bipartite_colours(matching).tolist() == [True, False, False, True]  # pairs (0, 2) and (3, 1)
    c, a = 0.01, 2 * S / B
    quiet = M.Network(2, 2, bandwidth=B, latency=0.0, overhead=0.0, rma_latency=0.0, local_latency=0.0)
    cost = M.step_cost(quiet, "ADPSGD", S, [c, 1e6, 1e6, c], topology=matching, steps=4000)
    assert cost.step == pytest.approx(2 * (c + 2 * a), rel=1e-3)


def test_adpsgd_default_simulation_is_long_enough_for_a_seed_free_mean():
    """Two hosts of two workers, averages as long as a few steps of compute (the 2 x 2
    emulated cluster): the mean step hardly depends on the random choices."""
    two_by_two = M.Network(2, 2, bandwidth=5.8e6, latency=0.0, rma_latency=1e-4)
    steps = [M.step_cost(two_by_two, "ADPSGD", 1.08e6, 0.057, seed=seed).step for seed in range(4)]
    assert max(steps) < 1.06 * min(steps), steps


def test_adpsgd_needs_a_bipartite_topology():
    with pytest.raises(T.TopologyError, match="bipartite"):
        M.step_cost(net(3), "ADPSGD", S, 0.01, topology="ring")


def test_fit_link_recovers_latency_and_bandwidth():
    sizes = np.array([1e3, 1e4, 1e5, 1e6, 1e7])
    latency, bandwidth = M.fit_link(sizes, 2e-4 + sizes / 3e8)
    assert latency == pytest.approx(2e-4) and bandwidth == pytest.approx(3e8)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one rank per host"):
        M.Network(0)
    with pytest.raises(ValueError, match="slow link"):
        M.Network(2, slow=((5, 2),))
    with pytest.raises(ValueError, match="knows"):
        M.step_cost(net(2), "Adam", S, 0.01)


# ---------------------------------------------------------------- mpidec plan

def test_plan_prints_the_models_step_times(capsys):
    from mpidec.cli import main

    assert main(["plan", "--workers", "8", "--per-host", "2", "--bandwidth", "8gbit", "--latency", "50us",
                 "--model-size", "8MB", "--compute", "10ms", "--slow-link", "4"]) == 0
    out = capsys.readouterr().out
    expected = M.Network(4, 2, bandwidth=1e9, latency=50e-6, overhead=2e-6, slow=((3, 4.0),))
    pmsgd = M.step_cost(expected, "PmSGD", 8e6, 0.01)
    ring = M.step_cost(expected, "DSGD", 8e6, 0.01, topology="ring")
    assert "8 workers (4 hosts x 2)" in out and "host 3's link 4x slower" in out
    assert f"{pmsgd.step * 1e3:>9.2f} {pmsgd.communication * 1e3:>9.2f}" in out.splitlines()[3]
    line = next(row for row in out.splitlines() if row.startswith("DSGD/DmSGD/DecentLaM     ring "))
    assert line.split()[-4:] == [f"{ring.step * 1e3:.2f}", f"{ring.communication * 1e3:.2f}",
                                 f"{ring.share:.0%}", f"{ring.step / pmsgd.step:.2f}"]


@pytest.mark.parametrize("flags, message", [
    (["--model-size", "1XB"], "--model-size '1XB': give a number with a unit"),
    (["--model-size", "1MB", "--per-host", "3"], "--workers 8 is not a multiple of --per-host 3"),
    (["--model-size", "1MB", "--slow-link", "0.5"], "--slow-link 0.5"),
    (["--params", "-3M"], "--params"),
])
def test_plan_names_the_flag_to_change(capsys, flags, message):
    from mpidec.cli import main

    try:
        code = main(["plan", "--workers", "8", "--compute", "10ms", *flags])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_binomial_allreduce_is_a_reduce_and_a_broadcast_of_the_whole_buffer():
    # 4 hosts: rounds 1 -> 0 and 3 -> 2, then 2 -> 0; the broadcast mirrors them
    assert M.allreduce_time(net(4), S, "binomial") == pytest.approx(4 * (O + ALPHA + S / B))
