"""What a run reports: JSON-lines records (written by rank 0), mirrored to TensorBoard.

``metrics.jsonl`` holds one JSON object per line, ``"event"`` saying which kind; every
value is over all ranks (a mean unless the name says otherwise):

``train`` (every ``log_every`` steps, over the steps since the previous record)
    step, epoch, lr, loss, accuracy (on the training batches), consensus_distance,
    compute_time (s per step: data, forward, backward), communication_time (s per step in
    ``optimizer.step()``: the exchange and the update arithmetic), samples_per_s (all
    ranks' samples over the slowest rank's compute + communication time: the job's pace,
    also where the others wait for that rank outside ``step()``), time (s since the start
    of the run, resumed runs included). ADPSGD: loss, accuracy and times of rank 0's own
    steps, consensus_distance None (an asynchronous run gathers no models while it
    trains), samples_per_s from the shared sample counter
``eval`` (every ``eval_every`` epochs and at the end)
    step, epoch, test_loss and test_accuracy of the averaged model, worker_test_loss,
    worker_test_accuracy (mean over workers), worker_test_accuracy_min / _max,
    consensus_distance, time
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ..atomic import write_text

RECORD_FIELDS = {
    "train": ("event", "step", "epoch", "lr", "loss", "accuracy", "consensus_distance", "compute_time",
              "communication_time", "samples_per_s", "time"),
    "eval": ("event", "step", "epoch", "test_loss", "test_accuracy", "worker_test_loss", "worker_test_accuracy",
             "worker_test_accuracy_min", "worker_test_accuracy_max", "consensus_distance", "time"),
}


NULLABLE = ("consensus_distance",)  # not measured during an asynchronous run (no collective)


def check_record(record: dict) -> dict:
    """Raise ValueError unless ``record`` has exactly its event's fields, all finite numbers
    (``consensus_distance`` may be None)."""
    fields = RECORD_FIELDS.get(record.get("event"))
    if fields is None:
        raise ValueError(f"unknown event {record.get('event')!r}; known: {', '.join(RECORD_FIELDS)}")
    if set(record) != set(fields):
        raise ValueError(f"{record['event']} record fields {sorted(record)} differ from {sorted(fields)}")
    for key in fields[1:]:
        if key in NULLABLE and record[key] is None:
            continue
        if not (isinstance(record[key], (int, float)) and math.isfinite(record[key])):
            raise ValueError(f"{record['event']} record: {key} = {record[key]!r} is not a finite number")
    return record


def read_records(path, warn=None) -> list[dict]:
    """The records of a ``metrics.jsonl``. A last line cut short (the disk filled up, the job
    was killed while writing) is dropped and ``warn(message)`` says so (default: a line on
    stderr); any other damaged line is a ValueError naming the file and the line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
    records = []
    for index, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
            if not (isinstance(record, dict) and record.get("event") in RECORD_FIELDS
                    and isinstance(record.get("step"), int)):
                raise ValueError("a JSON value, but not a record with an event and a step")
        except ValueError as exc:
            if index < len(lines) - 1:
                raise ValueError(f"{path}, line {number}: {exc}; the file is damaged (restore it, or "
                                 "resume from a checkpoint, which rewrites it)") from None
            (warn or _to_stderr)(f"{path}: dropped its last line ({number}), cut short: {line.strip()[:60]!r}")
            break
        records.append(record)
    return records


def _to_stderr(message: str) -> None:
    print(f"mpidec: {message}", file=sys.stderr, flush=True)


class Meter:
    """Per-rank sums over the steps since the last train record (saved in checkpoints)."""

    FIELDS = ("steps", "loss", "correct", "samples", "compute_time", "communication_time")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        for name in self.FIELDS:
            setattr(self, name, 0)

    def add(self, loss: float, correct: int, samples: int, compute_time: float, communication_time: float) -> None:
        self.steps += 1
        self.loss += loss
        self.correct += correct
        self.samples += samples
        self.compute_time += compute_time
        self.communication_time += communication_time

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    def load_state_dict(self, state: dict) -> None:
        for name in self.FIELDS:
            setattr(self, name, state[name])


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and mirrors them to TensorBoard when it is
    installed; inactive (all methods do nothing) on ranks other than 0."""

    def __init__(self, out_dir, active: bool, saved: dict | None = None):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.active = active
        self.records: list[dict] = []
        self._tensorboard = None
        if not active:
            return
        if saved is not None:  # the records up to the checkpoint: nothing lost, nothing after it twice
            kept = saved.get("records")  # None: a checkpoint from before they were saved in it
            self.records = kept if kept is not None else self._read_up_to(saved["step"])
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self._tensorboard = SummaryWriter(str(Path(out_dir) / "tensorboard"),
                                          purge_step=saved["step"] if saved is not None else None)

    def _read_up_to(self, step: int) -> list[dict]:
        """The file's records up to ``step`` (checkpoints that do not hold the records)."""
        if not self.path.exists():
            return []
        return [r for r in read_records(self.path) if r["step"] <= step]

    def write(self, record: dict) -> None:
        if not self.active:
            return
        check_record(record)
        self.records.append(record)
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise OSError(exc.errno, f"cannot append to {self.path}: {exc.strerror}") from exc
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("event", "step", "epoch", "time") and value is not None:
                    self._tensorboard.add_scalar(f"{record['event']}/{key}", value, record["step"])

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
