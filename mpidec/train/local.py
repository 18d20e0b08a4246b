"""The local part of setting up a run: what one rank builds on its own before the ranks
meet (output folder, saved state, device, data, model, partition).

It can fail on some ranks only (a folder missing on one node): :func:`prepare` raises
:class:`~mpidec.train.config.ConfigError` and the trainer makes every rank stop with the
same message. The cheap checks come first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..atomic import cannot_write
from . import checkpoint, models
from . import data as datasets
from . import device as devices
from .config import ConfigError, TrainConfig
from .partition import Partition


@dataclass
class LocalSetup:
    """One rank's parts of a run (:attr:`Trainer.local <mpidec.train.loop.Trainer>`)."""

    checkpoints: checkpoint.Checkpoints  # this rank's view of OUT/checkpoints
    device: torch.device
    data: datasets.Data
    model_name: str                      # --model, or the dataset's default
    model: torch.nn.Module               # on ``device``, the saved weights when resuming
    partition: Partition                 # this rank's samples, epoch by epoch


def prepare(config: TrainConfig, rank: int, size: int, local_rank: int) -> tuple[LocalSetup, dict | None]:
    """This rank's :class:`LocalSetup` and the saved state to resume from (None: a fresh run)."""
    reason = cannot_write(config.out_dir)
    if reason:
        raise ConfigError(f"--out {config.out_dir}: cannot write there ({reason}); pass a folder this "
                          "user can write, shared by every node")
    checkpoints = checkpoint.Checkpoints(config.out_dir, rank, size)
    saved = checkpoints.load() if config.resume else None
    changed = config.changed_invariants(saved["config"]) if saved else None
    if changed:
        raise ConfigError("--resume: the checkpoint was made with other settings; "
                          f"pass the saved ones: {'; '.join(changed)}")
    device = devices.choose(config.device, local_rank)
    data = datasets.load(config)
    model_name = config.model or models.DEFAULT_MODEL[config.dataset]
    model = models.build(model_name, data.input_shape, data.num_classes, config.seed).to(device)
    try:
        partition = Partition(data.train_labels, size, rank, config.partition, config.seed, config.alpha,
                              config.batch_size)
    except ValueError as exc:
        raise ConfigError(f"--partition {config.partition}: {exc}") from exc
    if saved:
        model.load_state_dict(saved["model"])  # before the optimizer exists (ADPSGD copies the model)
    return LocalSetup(checkpoints, device, data, model_name, model, partition), saved
