"""What a run reports: JSON-lines records (written by rank 0), mirrored to TensorBoard.

``metrics.jsonl`` holds one JSON object per line, ``"event"`` saying which kind; every
value is over all ranks (a mean unless the name says otherwise):

``train`` (every ``log_every`` steps, over the steps since the previous record)
    step, epoch, lr, loss, accuracy (on the training batches), consensus_distance,
    compute_time (s per step: data, forward, backward), communication_time (s per step in
    ``optimizer.step()``: the exchange and the update arithmetic), samples_per_s (all
    ranks), time (s since the start of the run, resumed runs included)
``eval`` (every ``eval_every`` epochs and at the end)
    step, epoch, test_loss and test_accuracy of the averaged model, worker_test_loss,
    worker_test_accuracy (mean over workers), worker_test_accuracy_min / _max,
    consensus_distance, time
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import write_text

RECORD_FIELDS = {
    "train": ("event", "step", "epoch", "lr", "loss", "accuracy", "consensus_distance", "compute_time",
              "communication_time", "samples_per_s", "time"),
    "eval": ("event", "step", "epoch", "test_loss", "test_accuracy", "worker_test_loss", "worker_test_accuracy",
             "worker_test_accuracy_min", "worker_test_accuracy_max", "consensus_distance", "time"),
}


def check_record(record: dict) -> dict:
    """Raise ValueError unless ``record`` has exactly its event's fields, all finite numbers."""
    fields = RECORD_FIELDS.get(record.get("event"))
    if fields is None:
        raise ValueError(f"unknown event {record.get('event')!r}; known: {', '.join(RECORD_FIELDS)}")
    if set(record) != set(fields):
        raise ValueError(f"{record['event']} record fields {sorted(record)} differ from {sorted(fields)}")
    for key in fields[1:]:
        if not (isinstance(record[key], (int, float)) and math.isfinite(record[key])):
            raise ValueError(f"{record['event']} record: {key} = {record[key]!r} is not a finite number")
    return record


def read_records(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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

    def __init__(self, out_dir, active: bool, resume_step: int | None = None):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.active = active
        self.records: list[dict] = []
        self._tensorboard = None
        if not active:
            return
        if resume_step is not None and self.path.exists():  # drop what came after the checkpoint
            self.records = [r for r in read_records(self.path) if r["step"] <= resume_step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self._tensorboard = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=resume_step)

    def write(self, record: dict) -> None:
        if not self.active:
            return
        check_record(record)
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("event", "step", "epoch", "time"):
                    self._tensorboard.add_scalar(f"{record['event']}/{key}", value, record["step"])

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
