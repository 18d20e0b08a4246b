"""``mpidec plan``: predicted time per step of every algorithm and topology on a cluster,
before renting it (the network clock of :mod:`mpidec.netmodel`)::

    mpidec plan --workers 64 --per-host 8 --bandwidth 100gbit --latency 2us \\
                --model-size 102MB --compute 120ms

prints, for PmSGD (allreduce), LocalSGD, SignumMV, gossip (DSGD, DmSGD, DecentLaM, ...:
one model per step) on each topology and AD-PSGD, the predicted step time, its
communication part, the communication share and the ratio to PmSGD. ``--profile`` starts
from a named cluster (:data:`PROFILES`); the other flags override it.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace

from . import netmodel as M
from . import topology as T

# Common clusters (assumed figures, not measurements: this machine cannot add latency).
PROFILES = {
    "ethernet25": ("25 Gbit/s Ethernet, 1 worker per host",
                   M.Network(1, 1, bandwidth=25 * M.GBIT, latency=25e-6, overhead=5e-6)),
    "ib100x4": ("100 Gbit/s InfiniBand, 4 GPUs per node (50 GB/s between them)",
                M.Network(1, 4, bandwidth=100 * M.GBIT, latency=2e-6, overhead=2e-6, local_bandwidth=50e9)),
    "ib400x8": ("400 Gbit/s InfiniBand, 8 GPUs per node (150 GB/s NVLink)",
                M.Network(1, 8, bandwidth=400 * M.GBIT, latency=2e-6, overhead=2e-6, local_bandwidth=150e9)),
}
GOSSIP_TOPOLOGIES = ("ring", "symmetric_exponential", "exponential", "one_peer_exponential")

_UNITS = {
    "rate": {"bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "b/s": 1, "kb/s": 1e3, "mb/s": 1e6,
             "gb/s": 1e9},
    "time": {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
    "size": {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30},
    "count": {"": 1, "k": 1e3, "m": 1e6, "g": 1e9},
}


def quantity(kind: str, flag: str):
    """An argparse type: ``'25gbit'``, ``'20us'``, ``'102MB'``, ``'25.6M'`` -> a float in base units."""
    units = _UNITS[kind]

    def parse(text: str) -> float:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*([a-zA-Z/]*)\s*", text)
        unit = match and match.group(2).lower().replace("bps", "bit").replace("bit/s", "bit")
        if not match or unit not in units and unit:
            raise argparse.ArgumentTypeError(
                f"{flag} {text!r}: give a number with a unit, one of {', '.join(u for u in units if u) or 'none'}")
        value = float(match.group(1)) * (units[unit] if unit else 1.0)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: must be > 0")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", "-n", type=int, required=True, help="number of workers (ranks)")
    parser.add_argument("--profile", choices=PROFILES, help="start from a named cluster: "
                        + "; ".join(f"{k}: {v[0]}" for k, v in PROFILES.items()))
    parser.add_argument("--per-host", type=int, help="workers per host, sharing its link (default 1)")
    parser.add_argument("--bandwidth", type=quantity("rate", "--bandwidth"),
                        help="each host's link, each way: 25gbit, 100mbit, 12GB/s (default 25gbit)")
    parser.add_argument("--latency", type=quantity("time", "--latency"), help="per message between hosts: 20us")
    parser.add_argument("--local-bandwidth", type=quantity("rate", "--local-bandwidth"),
                        help="between workers of one host: 150GB/s")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-size", type=quantity("size", "--model-size"), help="bytes of the model: 102MB")
    model.add_argument("--params", type=quantity("count", "--params"), help="float32 parameters: 25.6M")
    parser.add_argument("--compute", type=quantity("time", "--compute"), required=True,
                        help="forward + backward + local update per step on one worker: 120ms")
    parser.add_argument("--slow-link", type=float, default=1.0, metavar="FACTOR",
                        help="the last host's link is FACTOR times slower")
    parser.add_argument("--period", type=int, default=4, help="LocalSGD's averaging period")


def network_from(args) -> M.Network:
    """The :class:`~mpidec.netmodel.Network` the flags describe (ValueError naming the flag)."""
    base = PROFILES[args.profile][1] if args.profile else M.Network(1)
    per_host = args.per_host or base.per_host
    if args.workers < 2 or per_host < 1:
        raise ValueError(f"--workers must be >= 2 and --per-host >= 1, got {args.workers} and {per_host}")
    if args.workers % per_host:
        raise ValueError(f"--workers {args.workers} is not a multiple of --per-host {per_host}")
    if args.slow_link < 1:
        raise ValueError(f"--slow-link {args.slow_link:g}: a factor >= 1 (how many times slower)")
    hosts = args.workers // per_host
    changes = {k: getattr(args, k) for k in ("bandwidth", "latency", "local_bandwidth") if getattr(args, k)}
    slow = ((hosts - 1, args.slow_link),) if args.slow_link > 1 else ()
    return replace(base, hosts=hosts, per_host=per_host, slow=slow, **changes)


def rows(net: M.Network, nbytes: float, compute: float, period: int = 4) -> list[tuple[str, str, M.StepCost]]:
    """(algorithm, topology, cost) for every algorithm and the topologies it can use."""
    out = [("PmSGD", "allreduce", M.step_cost(net, "PmSGD", nbytes, compute)),
           (f"LocalSGD (period {period})", "allreduce", M.step_cost(net, "LocalSGD", nbytes, compute, period=period)),
           ("SignumMV", "majority vote", M.step_cost(net, "SignumMV", nbytes, compute))]
    for name in GOSSIP_TOPOLOGIES:
        out.append(("DSGD/DmSGD/DecentLaM", name, M.step_cost(net, "DSGD", nbytes, compute, topology=name)))
    if net.n % 2 == 0:
        out.append(("ADPSGD", "ring", M.step_cost(net, "ADPSGD", nbytes, compute, topology="ring")))
    return out


def describe(net: M.Network, nbytes: float, compute: float) -> str:
    slow = f", host {net.slow[0][0]}'s link {net.slow[0][1]:g}x slower" if net.slow else ""
    return (f"{net.n} workers ({net.hosts} hosts x {net.per_host}), links {net.bandwidth * 8 / 1e9:g} Gbit/s, "
            f"latency {net.latency * 1e6:g} us{slow}; model {nbytes / 1e6:.4g} MB, compute {compute * 1e3:.4g} ms/step")


def table(results, baseline: float) -> str:
    lines = [f"{'algorithm':<24} {'topology':<22} {'step ms':>9} {'comm ms':>9} {'comm share':>10} {'vs PmSGD':>9}"]
    lines.append("-" * len(lines[0]))
    for algorithm, topo, cost in results:
        lines.append(f"{algorithm:<24} {topo:<22} {cost.step * 1e3:>9.2f} {cost.communication * 1e3:>9.2f} "
                     f"{cost.share:>10.0%} {cost.step / baseline:>9.2f}")
    return "\n".join(lines)


def plan_command(args) -> int:
    try:
        net = network_from(args)
        nbytes = args.model_size if args.model_size else 4 * args.params
        results = rows(net, nbytes, args.compute, args.period)
    except (ValueError, T.TopologyError) as exc:
        print(f"mpidec plan: error: {exc}", file=sys.stderr)
        return 2
    print(describe(net, nbytes, args.compute))
    print(table(results, results[0][2].step))
    print("(predicted by mpidec.netmodel: alpha-beta per message, host links shared by their workers, "
          "no overlap of communication with compute; see docs/cluster.md)")
    return 0
