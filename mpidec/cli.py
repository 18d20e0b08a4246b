"""The ``mpidec`` command line.

    mpidec topology NAME -n N [--plot FILE.png]     neighbours, weights, spectral figures
    mpiexec -n 4 mpidec train [--algorithm ...]     train, one worker per MPI rank
    mpidec compare RUN_DIR... [--plots DIR]         table (and plots) of finished runs
"""

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


def train_command(args) -> int:
    from .runtime import rank_and_size
    from .train import ConfigError, train
    from .train.config import from_args

    try:
        train(from_args(args))
    except ConfigError as exc:  # raised on every rank alike: say it once
        if rank_and_size()[0] == 0:
            print(f"mpidec train: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def compare_command(args) -> int:
    from .train import ConfigError
    from .train.compare import compare

    try:
        text, paths = compare(args.runs, args.plots)
    except ConfigError as exc:
        print(f"mpidec compare: error: {exc}", file=sys.stderr)
        return 2
    print(text)
    for path in paths:
        print(f"wrote {path}")
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

    from .train.config import add_arguments

    train = sub.add_parser("train", help="train a model, one worker per MPI rank (run under mpiexec or srun)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(train)
    train.set_defaults(run=train_command)
    compare = sub.add_parser("compare", help="table and plots of finished training runs")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by mpidec train (--out)")
    compare.add_argument("--plots", metavar="DIR", help="write compare-curves.png and compare-consensus.png here")
    compare.set_defaults(run=compare_command)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
