"""Side by side: the summaries of several ``mpidec train`` runs as a table, and their
curves in shared plots (``mpidec compare results/train/*``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..atomic import cannot_write
from . import plots
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


class CompareError(ValueError):
    """A run folder that holds no readable run, or a ``--plots`` folder that cannot be
    written; the message names the file or folder and what to pass instead."""


def load_runs(run_dirs) -> list[tuple[dict, list[dict]]]:
    """``(summary, records)`` of each run folder; CompareError naming the file when one holds no
    run with results, or a damaged file. A missing or cut-short ``metrics.jsonl`` only costs
    curves (a line on stderr says so)."""
    return [(_summary(Path(folder)), _records(Path(folder))) for folder in run_dirs]


def _summary(folder: Path) -> dict:
    path = folder / "summary.json"
    if not path.exists():
        raise CompareError(f"{folder}: no summary.json; pass folders written by mpidec train (its --out)")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CompareError(f"{path} cannot be read ({exc}); rerun that training with --resume to rewrite it") from None
    if not isinstance(summary, dict):
        raise CompareError(f"{path} is not a run summary (a JSON object); pass folders written by mpidec train")
    if "algorithm" not in summary:
        status = summary.get("status", "unknown")
        raise CompareError(f"{folder}: no results (status {status!r}"
                          + (f": {summary['error']}" if summary.get("error") else "") + "); leave it out")
    if summary.get("status") not in (None, "finished"):
        summary = {**summary, "algorithm": f"{summary['algorithm']} ({summary['status']})"}
    return summary


def _records(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        print(f"mpidec compare: {path} is missing: no curves for that run", file=sys.stderr)
        return []
    try:
        return read_records(path)
    except (OSError, ValueError) as exc:
        raise CompareError(str(exc) if isinstance(exc, ValueError) else f"{path} cannot be read ({exc})") from None


def table(summaries) -> str:
    """A plain-text table, one row per run."""
    rows = [[header for header, _, _ in COLUMNS]]
    for summary in summaries:
        row = []
        for _, key, form in COLUMNS:
            row.append(_cell(summary.get(key), form, 1e3 if key in _MILLISECONDS else 1))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in
                       enumerate(zip(row, widths))) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _cell(value, form: str, scale: float) -> str:
    if value is None:
        return "-"
    try:
        return form.format(value * scale if scale != 1 else value)
    except (TypeError, ValueError):
        return "?"


def compare(run_dirs, plot_dir=None) -> tuple[str, list[Path]]:
    """The table of the runs and, with ``plot_dir``, the paths of the shared plots."""
    reason = plot_dir is not None and cannot_write(plot_dir)
    if reason:
        raise CompareError(f"--plots {plot_dir}: cannot write there ({reason}); pass a folder this user can write")
    runs = load_runs(run_dirs)
    paths = []
    if plot_dir is not None:
        labelled = [(summary["algorithm"], records) for summary, records in runs]
        paths = [plots.plot_curves(labelled, Path(plot_dir) / "compare-curves.png"),
                 plots.plot_consensus(labelled, Path(plot_dir) / "compare-consensus.png")]
    return table([summary for summary, _ in runs]), paths
