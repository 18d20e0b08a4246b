"""Checkpoints: one file per rank, complete for every rank or not used at all.

Layout under ``OUT/checkpoints/``::

    step-00000120/rank-00000.pt ... rank-0000N.pt     every rank's state at step 120
    latest                                            "step-00000120"

Each rank writes its file atomically; once every rank has written (a collective), rank 0
points ``latest`` at the new folder (atomically) and removes the older ones. A job killed
at any moment leaves ``latest`` naming a complete set. The output folder must be shared by
all ranks (the usual cluster file system).

A rank's state holds what an uninterrupted run would carry on with: the model, the
optimizer's ``state_dict()`` (mpidec optimizers include their step counter), the random
number generators, the data position (epoch, batch within it) and the metric sums.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write, write_text
from .config import ConfigError

LATEST = "latest"
STATE_KEYS = ("step", "config", "model", "optimizer", "rng", "world_size")


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Checkpoints:
    """The checkpoints of one run directory, seen from one rank."""

    def __init__(self, out_dir, rank: int, world_size: int):
        self.root = Path(out_dir) / "checkpoints"
        self.rank, self.world_size = rank, world_size

    def _file(self, folder: str) -> Path:
        return self.root / folder / f"rank-{self.rank:05d}.pt"

    def save(self, step: int, state: dict, comm) -> Path:
        """Write this rank's ``state`` for ``step`` (collective: every rank calls it)."""
        folder = f"step-{step:08d}"
        path = self._file(folder)
        try:
            atomic_write(path, lambda f: torch.save({**state, "world_size": self.world_size}, f))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write the checkpoint {path}: {exc.strerror}") from exc
        comm.allreduce_scalar(0.0)  # every rank's file is on disk before latest names the folder
        if self.rank == 0:
            write_text(self.root / LATEST, folder + "\n")
            for old in self.root.glob("step-*"):
                if old.name != folder:
                    shutil.rmtree(old, ignore_errors=True)
        return self.root / folder

    def load(self) -> dict:
        """This rank's state from the latest complete checkpoint; ConfigError naming the file
        when there is none, or it cannot be read, or it is not an mpidec checkpoint."""
        path = self._file(self._latest())
        if not path.exists():
            raise ConfigError(f"--resume: {path} is missing: was the run saved with more ranks, or is "
                              f"{self.root} not shared by every node?")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: numpy RNG state inside
        except Exception as exc:  # truncated zip, EOF, unpickling errors, OSError: all mean the file is damaged
            raise ConfigError(f"--resume: {path} cannot be read ({type(exc).__name__}: {exc}); it is damaged or "
                              "cut short: restore it, or drop --resume to start over") from None
        missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
        if missing:
            raise ConfigError(f"--resume: {path} is not a checkpoint of mpidec train (no {missing[0]!r}); "
                              "drop --resume to start over")
        if state["world_size"] != self.world_size:
            raise ConfigError(f"--resume: the checkpoint was written by {state['world_size']} ranks; "
                              f"launch {state['world_size']} ranks (now {self.world_size})")
        return state

    def _latest(self) -> str:
        """The folder ``latest`` names."""
        latest = self.root / LATEST
        if not latest.exists():
            raise ConfigError(f"--resume: no checkpoint in {self.root} (no {LATEST} file); "
                              "drop --resume to start a new run, or pass the --out of the run to continue")
        try:
            folder = latest.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--resume: {latest} cannot be read ({exc})") from None
        if not re.fullmatch(r"step-\d{8}", folder):
            raise ConfigError(f"--resume: {latest} holds {folder[:40]!r}, not a checkpoint folder name like "
                              "'step-00000120': restore it, or drop --resume to start over")
        return folder
