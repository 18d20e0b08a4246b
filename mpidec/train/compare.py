"""Side by side: the summaries of several ``mpidec train`` runs as a table, and their
curves in shared plots (``mpidec compare results/train/*``)."""

from __future__ import annotations

import json
from pathlib import Path

from . import plots
from .config import ConfigError
from .metrics import read_records

COLUMNS = (  # header, summary key, format
    ("algorithm", "algorithm", "{}"),
    ("test acc (avg model)", "test_accuracy", "{:.4f}"),
    ("test acc (workers)", "worker_test_accuracy", "{:.4f}"),
    ("consensus dist", "consensus_distance", "{:.3g}"),
    ("train loss", "train_loss", "{:.4f}"),
    ("compute ms/step", "compute_time", "{:.2f}"),
    ("comm ms/step", "communication_time", "{:.2f}"),
    ("train s", "time", "{:.1f}"),
)
_MILLISECONDS = {"compute_time", "communication_time"}


def load_runs(run_dirs) -> list[tuple[dict, list[dict]]]:
    """``(summary, records)`` of each run folder; ConfigError when one holds no finished run."""
    runs = []
    for folder in map(Path, run_dirs):
        if not (folder / "summary.json").exists():
            raise ConfigError(f"{folder}: no summary.json; pass folders written by mpidec train (its --out)")
        runs.append((json.loads((folder / "summary.json").read_text()), read_records(folder / "metrics.jsonl")))
    return runs


def table(summaries) -> str:
    """A plain-text table, one row per run."""
    rows = [[header for header, _, _ in COLUMNS]]
    for summary in summaries:
        row = []
        for _, key, form in COLUMNS:
            value = summary.get(key)
            value = value * 1e3 if key in _MILLISECONDS and value is not None else value
            row.append("-" if value is None else form.format(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in
                       enumerate(zip(row, widths))) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def compare(run_dirs, plot_dir=None) -> tuple[str, list[Path]]:
    """The table of the runs and, with ``plot_dir``, the paths of the shared plots."""
    runs = load_runs(run_dirs)
    paths = []
    if plot_dir is not None:
        labelled = [(summary["algorithm"], records) for summary, records in runs]
        paths = [plots.plot_curves(labelled, Path(plot_dir) / "compare-curves.png"),
                 plots.plot_consensus(labelled, Path(plot_dir) / "compare-consensus.png")]
    return table([summary for summary, _ in runs]), paths
