"""Learning-rate schedules: linear scaling with the global batch, warm-up, then decay.

Following Goyal et al. (2017): with ``k = global_batch / reference_batch`` the peak rate
is ``k * lr``, reached by a linear ramp over the warm-up steps that starts from ``lr``
itself (or from the peak when ``k <= 1``). After warm-up the rate decays:

- cosine: ``peak * (1 + cos(pi * t / T)) / 2`` with ``t`` steps after warm-up out of ``T``;
- step:   ``peak * factor ** (milestones passed)``;
- none:   ``peak``.

A schedule is a pure function of the global step, the same on every rank, so a resumed
run sets exactly the rates an uninterrupted one would.
"""

from __future__ import annotations

import bisect
import math

SCALINGS = ("linear", "none")        # of the peak with the global batch
DECAYS = ("cosine", "step", "none")  # after the warm-up


def scaled_lr(lr: float, global_batch: int, reference_batch: int, scaling: str = "linear") -> float:
    """The peak learning rate for ``global_batch`` samples per step."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown learning-rate scaling {scaling!r}; use one of {', '.join(SCALINGS)}")
    return lr * global_batch / reference_batch if scaling == "linear" else lr


class LRSchedule:
    """``schedule(step)`` is the learning rate of global step ``step`` (0-based).

    ``warmup_steps`` ramp linearly from ``start`` to ``peak``; the remaining steps up to
    ``total_steps`` follow ``decay``. ``milestones`` are steps (step decay only).
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, start: float | None = None,
                 decay: str = "cosine", milestones=(), factor: float = 0.1):
        if decay not in DECAYS:
            raise ValueError(f"unknown decay {decay!r}; use one of {', '.join(DECAYS)}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warm-up of {warmup_steps} steps does not fit in {total_steps} steps")
        self.peak, self.total_steps, self.warmup_steps = peak, total_steps, warmup_steps
        self.start = min(peak, start) if start is not None else peak
        self.decay, self.factor = decay, factor
        self.milestones = sorted(milestones)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start + (self.peak - self.start) * step / self.warmup_steps
        if self.decay == "cosine":
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return self.peak * (1 + math.cos(math.pi * min(progress, 1.0))) / 2
        if self.decay == "step":
            return self.peak * self.factor ** bisect.bisect_right(self.milestones, step)
        return self.peak


def from_config(config, steps_per_epoch: int, world_size: int) -> LRSchedule:
    """The schedule of a :class:`~mpidec.train.config.TrainConfig` (epochs become steps)."""
    peak = scaled_lr(config.lr, config.batch_size * world_size, config.reference_batch, config.lr_scaling)
    total = config.epochs * steps_per_epoch
    milestones = config.milestones or [config.epochs / 2, config.epochs * 3 / 4]
    return LRSchedule(peak, total, warmup_steps=round(config.warmup_epochs * steps_per_epoch), start=config.lr,
                      decay=config.decay, milestones=[round(m * steps_per_epoch) for m in milestones],
                      factor=config.decay_factor)
