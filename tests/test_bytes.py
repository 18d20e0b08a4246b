"""Every optimizer reports the bytes it hands the transport per step (``last_step_bytes``,
``bytes_sent``): equal to an independent count at the transport primitives, and to the
closed forms of a ring of 4 workers (B = the model's bytes)."""

import pytest
import torch

from mpidec import optim
from mpidec import topology as T
from mpidec.comm import Simulator
from oracles import count_at_the_transport, stop_counting

N_WORKERS, STEPS = 4, 4
IN, OUT = 31, 32                  # a Linear layer of 31 x 32 + 32 = 1024 float32: B = 4096 bytes
B = (IN * OUT + OUT) * 4
OPTIONS = {"LocalSGD": {"period": 2}, "DiLoCo": {"period": 2}, "CHOCO": {"compressor": "top_k", "ratio": 0.1}}


def run(algorithm, topology, **options):
    """Each worker's ``last_step_bytes`` per step, what the wrappers counted during each
    ``backward`` + ``step`` (and not between steps), and ``bytes_sent`` at the end."""

    def worker(comm):
        torch.manual_seed(0)
        net = torch.nn.Linear(IN, OUT)
        opt = optim.by_name(algorithm)(net.parameters(), lr=0.01, comm=comm, topology=topology, **options)
        counted, reported, per_step = count_at_the_transport(comm), [], []
        x = torch.randn(8, IN, generator=torch.Generator().manual_seed(comm.rank))
        for _ in range(STEPS):
            opt.zero_grad()
            before = counted[0]
            net(x).square().mean().backward()                     # PmSGD starts its allreduce here
            opt.step()
            per_step.append(counted[0] - before)
            reported.append(opt.last_step_bytes)
            comm.allreduce([p.detach().clone() for p in net.parameters()])  # not the optimizer's
        stop_counting(comm)
        return reported, per_step, opt.bytes_sent

    return Simulator(N_WORKERS).run(worker)


@pytest.mark.parametrize("algorithm", [a for a in optim.ALGORITHMS if a != "ADPSGD"])
def test_reported_bytes_are_the_bytes_counted_at_the_transport(algorithm):
    topo = T.one_peer_exponential(N_WORKERS) if optim.by_name(algorithm).push_sum else T.ring(N_WORKERS)
    for reported, counted, total in run(algorithm, topo, **OPTIONS.get(algorithm, {})):
        assert reported == counted
        assert total == sum(counted) and total > 0


@pytest.mark.parametrize("algorithm, options, per_step", [
    ("DSGD", {}, [2 * B] * STEPS),                                   # the model to 2 neighbours
    ("DmSGD", {"momentum": 0.9}, [2 * B] * STEPS),
    ("DmSGD", {"momentum": 0.9, "variant": "yu"}, [4 * B] * STEPS),  # model and momentum
    ("DecentLaM", {"momentum": 0.9}, [2 * B] * STEPS),
    ("D2", {}, [2 * B] * STEPS),
    ("GT", {}, [4 * B] * STEPS),                                     # model and tracker
    ("DSGD", {"wire_dtype": torch.bfloat16}, [B] * STEPS),           # half the bytes on the wire
    ("PmSGD", {"momentum": 0.9}, [1.5 * (B + 2 * 4)] * STEPS),       # ring allreduce: 2 (n - 1) / n of the
                                                                     # gradients and which of the 2 exist
    ("LocalSGD", {"momentum": 0.9, "period": 2}, [0, 3 * B] * (STEPS // 2)),  # model and momentum
    ("SignumMV", {}, [2 * 3 * B / 4 / 32] * STEPS),                  # 1 bit: 2 (n - 1) / n x B / 32
])
def test_bytes_per_step_are_the_closed_form(algorithm, options, per_step):
    for reported, _, _ in run(algorithm, T.ring(N_WORKERS), **options):
        assert reported == per_step


def test_adpsgd_counts_the_model_it_puts_into_a_peers_window():
    """One average per step of an active worker: its model into the peer's window (the get
    brings as many back); a passive worker's step sends nothing."""

    def worker(comm):
        net = torch.nn.Linear(IN, OUT)
        opt = optim.ADPSGD(net.parameters(), lr=0.01, comm=comm, topology=T.ring(N_WORKERS))
        reported = []
        for _ in range(STEPS):
            for p in net.parameters():
                p.grad = torch.ones_like(p)
            opt.step()
            reported.append(opt.last_step_bytes)
        opt.finish()
        return opt.active, reported

    results = Simulator(N_WORKERS).run(worker)
    assert sorted(active for active, _ in results) == [False, False, True, True]
    for active, reported in results:
        assert reported == [B if active else 0] * STEPS
