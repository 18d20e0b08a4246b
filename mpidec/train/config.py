"""What a training run is: :class:`TrainConfig`, its checks, and its command-line flags.

Every default lives in the dataclass; the ``mpidec train`` flags are generated from it, so
``TrainConfig(algorithm="DmSGD", epochs=3)`` in Python and ``mpidec train --algorithm DmSGD
--epochs 3`` on the command line describe the same run.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
from dataclasses import dataclass, field

from .partition import SCHEMES
from .schedule import DECAYS, SCALINGS

# data.py (one loader per dataset) and device.py import torch, which the flags must not wait
# for: the names of the datasets and devices are listed here (tests/test_datasets.py holds
# data.py to them).
DATASETS = ("digits", "synthetic", "cifar10", "imagenet")
DEVICES = ("auto", "cpu", "cuda")
CHOICES = {"dataset": DATASETS, "partition": SCHEMES, "decay": DECAYS, "lr_scaling": SCALINGS, "device": DEVICES}

# Fields that must not change when a run resumes: they decide what the saved state means.
RESUME_INVARIANTS = ("algorithm", "options", "topology", "dataset", "partition", "alpha", "model",
                     "batch_size", "seed", "image_size")


REAL_FIELDS = ("lr", "momentum", "weight_decay", "warmup_epochs", "decay_factor", "alpha")
MAX_WORKERS, MAX_IMAGE_SIZE = 64, 4096


class ConfigError(ValueError):
    """A setting that cannot work; the message names the flag and what to change."""


def _check_real(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{flag(name)} must be a finite number, got {value!r}")


@dataclass
class TrainConfig:
    """One training run. ``lr`` is the learning rate for ``reference_batch`` samples:
    with ``lr_scaling="linear"`` the peak rate is ``lr * global_batch / reference_batch``
    (Goyal et al. 2017), reached after ``warmup_epochs`` of linear warm-up."""

    algorithm: str = "DecentLaM"
    options: dict = field(default_factory=dict)  # algorithm-specific, e.g. {"period": 4}
    topology: str | None = None    # None: the algorithm's default_topology
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    batch_size: int = 32          # per worker
    epochs: int = 10
    warmup_epochs: float = 1.0
    lr_scaling: str = "linear"
    reference_batch: int = 256
    decay: str = "cosine"
    milestones: list = field(default_factory=list)  # epochs; step decay; empty: half and 3/4 of training
    decay_factor: float = 0.1
    seed: int = 0
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None  # imagenet: 224, synthetic: 32
    workers: int = 2               # data-loading processes per rank (folder and synthetic datasets)
    partition: str = "iid"
    alpha: float = 0.5             # Dirichlet concentration: small = heterogeneous
    model: str | None = None       # None: the dataset's default
    device: str = "auto"
    out: str | None = None         # None: results/train/<dataset>-<algorithm>-<topology>
    log_every: int = 10            # steps between train records (with the consensus distance)
    eval_every: int = 1            # epochs between evaluations
    checkpoint_every: int = 500    # steps; 0: only at the end and on SIGTERM
    resume: bool = False
    progress: bool = True

    def check(self) -> "TrainConfig":
        """Raise :class:`ConfigError` on a setting that cannot work; return self."""
        for name in REAL_FIELDS:
            _check_real(name, getattr(self, name))
        for value in self.milestones:
            _check_real("milestones", value)
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            raise ConfigError(f"--seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.out is not None and not str(self.out).strip():
            raise ConfigError("--out is empty; pass a folder, or leave the flag out for the default")
        if isinstance(self.workers, int) and self.workers > MAX_WORKERS:
            raise ConfigError(f"--workers {self.workers}: at most {MAX_WORKERS} loader processes per rank")
        if self.image_size is not None and isinstance(self.image_size, int) and self.image_size > MAX_IMAGE_SIZE:
            raise ConfigError(f"--image-size {self.image_size}: at most {MAX_IMAGE_SIZE}")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{flag(name)} {getattr(self, name)!r} is not one of: {', '.join(choices)}")
        for name in ("batch_size", "epochs", "reference_batch", "log_every", "eval_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{flag(name)} must be an integer >= 1, got {value!r}")
        for name in ("lr", "weight_decay", "warmup_epochs", "checkpoint_every", "workers"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{flag(name)} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.decay_factor <= 1:
            raise ConfigError(f"--decay-factor must be in (0, 1], got {self.decay_factor!r}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"--warmup-epochs {self.warmup_epochs:g} is longer than --epochs {self.epochs}")
        if any(not 0 < m < self.epochs for m in self.milestones):
            raise ConfigError(f"--milestones {self.milestones} must lie strictly between 0 and --epochs {self.epochs}")
        if self.partition == "dirichlet" and not self.alpha > 0:
            raise ConfigError(f"--alpha must be > 0 for the Dirichlet partition, got {self.alpha!r}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"--image-size must be >= 8, got {self.image_size}")
        return self

    @property
    def out_dir(self) -> str:
        return self.out or f"results/train/{self.dataset}-{self.algorithm.lower()}-{self.topology or 'default'}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def changed_invariants(self, saved: dict) -> list[str]:
        """``flag: saved -> now`` for each setting a checkpoint cannot be resumed with."""
        now = self.to_dict()
        return [f"{flag(key)}: {saved.get(key)!r} -> {now[key]!r}"
                for key in RESUME_INVARIANTS if saved.get(key) != now[key]]


def flag(name: str) -> str:
    """The command-line flag of a :class:`TrainConfig` field."""
    return "--option" if name == "options" else "--" + name.replace("_", "-")


def parse_option(text: str) -> tuple[str, object]:
    """``"period=4"`` -> ``("period", 4)``; values are Python literals, else strings."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (e.g. period=4 or variant=yu)")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


# ---------------------------------------------------------------- command line

_HELP = {
    "algorithm": "optimizer name from mpidec.optim.ALGORITHMS (case-insensitive)",
    "options": "algorithm-specific constructor argument NAME=VALUE, repeatable: period=4 (LocalSGD), "
               "variant=yu (DmSGD)",
    "topology": "communication graph, a name from mpidec.topology.BUILDERS (default: the algorithm's "
                "default_topology)",
    "lr": "learning rate for --reference-batch samples (scaled to the global batch, see --lr-scaling)",
    "momentum": "momentum coefficient beta (D2 needs 0)",
    "nesterov": "Nesterov momentum",
    "weight_decay": "L2 penalty added to the gradient",
    "batch_size": "samples per worker per step",
    "epochs": "passes over the training set (all workers together)",
    "warmup_epochs": "linear warm-up from the unscaled --lr to the scaled peak (none when the peak is lower)",
    "lr_scaling": "linear: peak lr = lr * global batch / --reference-batch (Goyal et al.)",
    "reference_batch": "the batch size --lr is meant for",
    "decay": "after warm-up: cosine to zero, step (x --decay-factor at --milestones), or none",
    "milestones": "epochs of the step decay (default: half and three quarters of training)",
    "decay_factor": "step-decay multiplier",
    "seed": "model initialisation, data order and partition; same on every rank",
    "dataset": "digits: embedded in scikit-learn, no download; synthetic: generated; "
               "cifar10, imagenet: local folders under --data-dir",
    "data_dir": "folder holding cifar-10-batches-py/ (cifar10) or train/ and val/ (imagenet)",
    "image_size": "image side for imagenet (224) and synthetic (32)",
    "workers": "data-loading processes per rank for folder and synthetic datasets",
    "partition": "how training samples are split over ranks",
    "alpha": "Dirichlet concentration for --partition dirichlet (small: each rank sees few classes)",
    "model": "small_cnn, resnet20, resnet18, resnet50, mobilenet_v2 (default: by dataset)",
    "device": "auto: the GPU of this rank's local rank when CUDA is available, else the CPU",
    "out": "output folder: metrics.jsonl, summary.json, plots, checkpoints "
           "(default results/train/DATASET-ALGORITHM-TOPOLOGY)",
    "log_every": "steps between train records (loss, lr, consensus distance, timings)",
    "eval_every": "epochs between evaluations of every worker's model and of the averaged model",
    "checkpoint_every": "steps between checkpoints (0: only at the end and on SIGTERM)",
    "resume": "continue from the latest checkpoint in --out",
    "progress": "progress bar on rank 0",
}


# flags whose default is None, and so says nothing of their type
_FIELD_TYPES = {"topology": str, "data_dir": str, "image_size": int, "model": str, "out": str}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``mpidec train`` flags, one per :class:`TrainConfig` field, with its defaults."""
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        kwargs = {"dest": f.name, "help": _HELP[f.name]}
        if isinstance(default, bool):
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
        elif f.name == "options":
            kwargs.update(action="append", type=parse_option, default=[], metavar="NAME=VALUE")
        elif f.name == "milestones":
            kwargs.update(nargs="+", type=float, default=[], metavar="EPOCH")
        else:
            kwargs.update(default=default, type=_FIELD_TYPES.get(f.name, type(default)))
            if f.name in CHOICES:
                kwargs["choices"] = CHOICES[f.name]
        parser.add_argument(flag(f.name), **kwargs)


def from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    values["options"] = dict(values["options"])
    return TrainConfig(**values).check()
