"""``mpidec train``'s entry point: the loop for the algorithm, run on every rank, with the
run's status recorded (``summary.json``: running, then finished, preempted or failed)."""

from __future__ import annotations

from . import algorithm, report
from .asynchronous import AsyncTrainer
from .config import ConfigError, TrainConfig
from .loop import Trainer
from .preemption import catching
from .report import TrainingDiverged


def train(config: TrainConfig) -> dict:
    """Train on every rank of ``MPI.COMM_WORLD``; returns the run's summary (on every rank)."""
    with catching():  # a stop request during start-up is kept for the first step boundary
        config = config.check()
        asynchronous = callable(getattr(algorithm.resolve(config.algorithm), "finish", None))  # ADPSGD
        cls = AsyncTrainer if asynchronous else Trainer
        previous = report.mark_running(config.out_dir)
        try:
            return cls(config).run()
        except (ConfigError, TrainingDiverged) as exc:  # on every rank alike
            report.mark_failed(config.out_dir, str(exc), previous)
            raise
