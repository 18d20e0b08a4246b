"""Learning rates (mpidec.train.schedule): linear scaling, warm-up, cosine and step decay
in closed form, and the schedule a TrainConfig describes."""

import math

import pytest

from mpidec.train import TrainConfig, schedule


def test_linear_scaling_rule():
    assert schedule.scaled_lr(0.1, 1024, 256) == pytest.approx(0.4)
    assert schedule.scaled_lr(0.1, 1024, 256, "none") == 0.1


def test_warmup_then_cosine_closed_form():
    s = schedule.LRSchedule(peak=0.4, total_steps=110, warmup_steps=10, start=0.1, decay="cosine")
    assert [s(0), s(5), s(10)] == pytest.approx([0.1, 0.25, 0.4])
    assert s(60) == pytest.approx(0.2)  # half way through the decay
    assert s(35) == pytest.approx(0.4 * (1 + math.cos(math.pi / 4)) / 2)
    assert s(110) == pytest.approx(0.0, abs=1e-15)


def test_step_decay_and_warmup_that_never_goes_up():
    s = schedule.LRSchedule(peak=1.0, total_steps=100, decay="step", milestones=[50, 75], factor=0.1)
    assert [s(0), s(49), s(50), s(74), s(75), s(99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    below = schedule.LRSchedule(peak=0.05, total_steps=10, warmup_steps=5, start=0.1, decay="none")
    assert [below(t) for t in range(10)] == [0.05] * 10  # the peak is below --lr: nothing to warm up


def test_schedule_from_config_counts_epochs_in_steps():
    config = TrainConfig(lr=0.1, batch_size=32, epochs=10, warmup_epochs=2, decay="step", milestones=[6])
    s = schedule.from_config(config, steps_per_epoch=11, world_size=16)  # global batch 512: peak 0.2
    assert s.peak == pytest.approx(0.2) and s.warmup_steps == 22 and s.total_steps == 110
    assert [s(0), s(11), s(22), s(65), s(66)] == pytest.approx([0.1, 0.15, 0.2, 0.2, 0.02])
