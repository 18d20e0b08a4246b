"""The ``mpidec`` command line: ``mpidec topology NAME -n N [--plot FILE.png]``."""

from __future__ import annotations

import argparse
import sys

from . import topology as T


def topology_command(args) -> int:
    try:
        topo = T.build(args.name, args.n)
    except T.TopologyError as exc:
        print(f"mpidec topology: {exc}", file=sys.stderr)
        return 2
    for step in range(min(args.steps, topo.period or args.steps)):
        static = topo.at(step)
        if topo.period != 1:
            print(f"step {step}:")
        for i in range(topo.n):
            weights = ", ".join(f"{j}:{static.W[i, j]:.4g}" for j in [i, *static.in_neighbors(i)])
            print(f"  node {i:>3}  receives from {static.in_neighbors(i)}  weights {{{weights}}}")
    for key, value in T.summary(topo).items():
        print(f"{key:>17}: {value:.6g}" if isinstance(value, float) else f"{key:>17}: {value}")
    if args.plot:
        from .plots import plot_topology

        print(f"wrote {plot_topology(topo, args.plot)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mpidec", description="decentralized training on MPI")
    sub = parser.add_subparsers(dest="command", required=True)
    topo = sub.add_parser("topology", help="neighbours, weights and spectral figures of a topology")
    topo.add_argument("name", help=", ".join(T.BUILDERS))
    topo.add_argument("-n", type=int, required=True, help="number of nodes")
    topo.add_argument("--steps", type=int, default=4, help="steps of a time-varying topology to show")
    topo.add_argument("--plot", metavar="FILE.png", help="draw the graph (every step of a schedule)")
    topo.set_defaults(run=topology_command)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
