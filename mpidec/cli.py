"""The ``mpidec`` command line.

    mpidec topology NAME -n N [--plot FILE.png]     neighbours, weights, spectral figures
    mpiexec -n 4 mpidec train [--algorithm ...]     train, one worker per MPI rank
    mpidec compare RUN_DIR... [--plots DIR]         table (and plots) of finished runs
    mpidec plan --workers N --bandwidth ... --model-size ... --compute ...   predicted step times

Under ``mpiexec`` every rank parses the same arguments: a usage error is printed by rank 0
only and every rank exits 2 before MPI starts. ``train`` catches SIGTERM and SIGINT from
its first line on (:mod:`mpidec.signals`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .runtime import launch_rank

MAX_TOPOLOGY_NODES = 4096  # the command analyses dense n x n matrices


class _Parser(argparse.ArgumentParser):
    """Prints usage, help and errors on rank 0 only (every rank of a job parses the same argv)."""

    def _print_message(self, message, file=None):
        if launch_rank() == 0:
            super()._print_message(message, file)

    def exit(self, status=0, message=None):
        _let_rank_0_speak(status)
        super().exit(status, message)


def _let_rank_0_speak(status: int) -> None:
    """On ranks other than 0, wait a moment before a failing exit: mpiexec ends the whole job
    at the first non-zero exit status, maybe before rank 0 has printed why."""
    if status and launch_rank() != 0:
        time.sleep(1.0)


def _topology_problem(args) -> str | None:
    """What is wrong with the ``topology`` arguments, checked before any matrix is built."""
    from .atomic import cannot_write

    if args.n > MAX_TOPOLOGY_NODES:
        return (f"-n {args.n} is too large for this command (at most {MAX_TOPOLOGY_NODES}: it analyses dense "
                "n x n matrices)")
    if args.steps < 1:
        return f"--steps must be >= 1, got {args.steps}"
    reason = args.plot and cannot_write(os.path.dirname(args.plot) or ".")
    return f"--plot {args.plot}: cannot write there ({reason})" if reason else None


def topology_command(args) -> int:
    from . import topology as T

    problem = _topology_problem(args)
    try:
        topo = None if problem else T.build(args.name, args.n)
    except T.TopologyError as exc:
        problem = str(exc)
    if problem:
        print(f"mpidec topology: {problem}", file=sys.stderr)
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
        from .figures import plot_topology

        print(f"wrote {plot_topology(topo, args.plot)}")
    return 0


def train_command(args) -> int:
    """0: finished or preempted (summary.json says which); 2: a setting that cannot work; 1: the
    run diverged. Both errors are raised on every rank alike: rank 0 says it, once."""
    from .train import ConfigError, train
    from .train.config import from_args
    from .train.report import TrainingDiverged

    try:
        train(from_args(args))
    except (ConfigError, TrainingDiverged) as exc:
        if launch_rank() == 0:
            print(f"mpidec train: error: {exc}", file=sys.stderr, flush=True)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0


def compare_command(args) -> int:
    from .train.compare import CompareError, compare

    try:
        text, paths = compare(args.runs, args.plots)
    except CompareError as exc:
        print(f"mpidec compare: error: {exc}", file=sys.stderr)
        return 2
    print(text)
    for path in paths:
        print(f"wrote {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    from .topology import BUILDERS
    from .train.config import add_arguments

    top = _Parser(prog="mpidec", description="decentralized training on MPI")
    sub = top.add_subparsers(dest="command", required=True)
    topo = sub.add_parser("topology", help="neighbours, weights and spectral figures of a topology")
    topo.add_argument("name", help=", ".join(BUILDERS))
    topo.add_argument("-n", type=int, required=True, help="number of nodes")
    topo.add_argument("--steps", type=int, default=4, help="steps of a time-varying topology to show")
    topo.add_argument("--plot", metavar="FILE.png", help="draw the graph (every step of a schedule)")
    topo.set_defaults(run=topology_command)
    train = sub.add_parser("train", help="train a model, one worker per MPI rank (run under mpiexec or srun)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(train)
    train.set_defaults(run=train_command)
    compare = sub.add_parser("compare", help="table and plots of finished training runs")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by mpidec train (--out)")
    compare.add_argument("--plots", metavar="DIR", help="write compare-curves.png and compare-consensus.png here")
    compare.set_defaults(run=compare_command)
    from .plan import add_arguments as add_plan_arguments, plan_command

    plan = sub.add_parser("plan", help="predicted step time and communication share of every algorithm on a cluster")
    add_plan_arguments(plan)
    plan.set_defaults(run=plan_command)
    return top


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from . import signals

        signals.catch()  # first: a signal during imports or start-up becomes a stop request, not a kill
    args = parser().parse_args(argv)
    status = args.run(args)
    _let_rank_0_speak(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
