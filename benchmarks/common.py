"""How every benchmark ends: its results file, its figure, and the line that says where they are.

A benchmark takes the shared flags (:func:`add_output_flags`: ``--out`` for the results JSON,
``--plot`` for the PNG), draws with matplotlib as :mod:`mpidec.figures` sets it up
(:func:`subplots`, :func:`save`), and ends with :func:`finish`. A benchmark that runs in
parts (simulated and MPI, a sweep and a rank scaling) merges its part into what the results
file already holds (:func:`previous`). Under MPI only rank 0 calls :func:`finish`.
"""

from __future__ import annotations

import json
from pathlib import Path

from mpidec.atomic import write_json
from mpidec.figures import pyplot, save  # noqa: F401 (the benchmarks' figures: one matplotlib setup)


def add_output_flags(parser, name: str) -> None:
    """``--out benchmarks/results/NAME.json`` and ``--plot docs/figures/NAME.png``."""
    parser.add_argument("--out", default=f"benchmarks/results/{name}.json", help="results file (JSON)")
    parser.add_argument("--plot", default=f"docs/figures/{name}.png", help="figure (PNG)")


def previous(path) -> dict:
    """The results already in ``path``: {} when there are none or they cannot be read."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` on the Agg backend (:func:`mpidec.figures.pyplot`)."""
    return pyplot().subplots(*args, **kwargs)


def finish(args, results: dict, draw) -> None:
    """Write ``results`` to ``args.out``, ``draw(results, args.plot)``, and print both paths."""
    write_json(args.out, results)
    draw(results, args.plot)
    print(f"wrote {args.out} and {args.plot}", flush=True)
