"""mpidec train, serial parts: partitions, schedules, data, models, metrics, and the errors
that bad arguments give (in process and through the command line)."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mpidec import cli
from mpidec.train import ConfigError, TrainConfig, data, models, partition, schedule, train
from mpidec.train.batches import batches
from mpidec.train.compare import compare
from mpidec.train.metrics import MetricsLog, check_record, read_records

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- partitions


def test_iid_epochs_are_disjoint_equal_blocks_of_a_fresh_global_permutation():
    n, size = 103, 4
    for epoch in range(3):
        blocks = [partition.iid_order(n, size, rank, seed=7, epoch=epoch) for rank in range(size)]
        everything = np.concatenate(blocks)
        assert all(len(b) == n // size for b in blocks)
        assert len(set(everything)) == len(everything) == size * (n // size)
        assert everything.min() >= 0 and everything.max() < n
    assert not np.array_equal(partition.iid_order(n, size, 0, 7, 0), partition.iid_order(n, size, 0, 7, 1))
    assert np.array_equal(partition.iid_order(n, size, 2, 7, 1), partition.iid_order(n, size, 2, 7, 1))
    assert not np.array_equal(partition.iid_order(n, size, 0, 7, 0), partition.iid_order(n, size, 0, 8, 0))


def test_label_sorted_shares_are_contiguous_label_blocks():
    labels = np.repeat(np.arange(8), 10)[::-1]  # 80 samples, 8 classes
    shares = partition.label_sorted_shares(labels, 4)
    assert sorted(np.concatenate(shares)) == list(range(80))
    assert [sorted(set(labels[s])) for s in shares] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def _classes_per_rank(labels, alpha, size=8):
    shares = partition.dirichlet_shares(labels, size, alpha, seed=3)
    assert sorted(np.concatenate(shares)) == list(range(len(labels)))  # a partition of every sample
    assert all(len(s) for s in shares)
    return np.mean([len(set(labels[s])) for s in shares])


def test_dirichlet_shares_partition_the_samples_and_alpha_sets_the_skew():
    labels = np.repeat(np.arange(10), 100)
    assert _classes_per_rank(labels, alpha=0.05) < 4 < 9.5 < _classes_per_rank(labels, alpha=100.0)
    assert all(np.array_equal(a, b) for a, b in zip(partition.dirichlet_shares(labels, 8, 0.5, 3),
                                                    partition.dirichlet_shares(labels, 8, 0.5, 3)))


def test_a_partition_gives_every_rank_the_same_whole_number_of_batches():
    labels = np.repeat(np.arange(10), 37)  # 370 samples
    parts = [partition.Partition(labels, 4, rank, "dirichlet", seed=1, alpha=0.2, batch_size=16) for rank in range(4)]
    assert {p.steps_per_epoch for p in parts} == {370 // 4 // 16}
    for p in parts:
        order = p.epoch_order(epoch=2)
        assert len(order) == p.samples_per_rank == 5 * 16
        assert set(order) <= set(p.share)
        if len(p.share) >= len(order):
            assert len(set(order)) == len(order)  # no repeats while the share is large enough
    with pytest.raises(ValueError, match="lower --batch-size"):
        partition.Partition(labels, 4, 0, batch_size=100)


# ---------------------------------------------------------------- schedules


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


# ---------------------------------------------------------------- data and models


def test_digits_are_embedded_and_split_the_same_way_every_time():
    d = data.load(TrainConfig())
    assert (len(d.train), len(d.test), d.input_shape, d.num_classes) == (1437, 360, (1, 8, 8), 10)
    assert d.train.images.min() >= -1 and d.train.images.max() <= 1
    assert torch.equal(d.test.labels, data.load(TrainConfig(seed=5)).test.labels)


def test_an_imagenet_style_folder_loads_with_reproducible_augmentation(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("cat", "dog", "eel"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{i}.png")
    d = data.load(TrainConfig(dataset="imagenet", data_dir=str(tmp_path), image_size=16))
    assert (len(d.train), len(d.test), d.num_classes, d.input_shape) == (12, 12, 3, (3, 16, 16))
    assert list(d.train_labels) == [0] * 4 + [1] * 4 + [2] * 4
    order = np.arange(12)[::-1]
    whole = list(batches(d.train, order, 4, seed=1, epoch=3))
    tail = list(batches(d.train, order, 4, start=1, seed=1, epoch=3, workers=2))
    assert [x.shape for x, _ in whole] == [(4, 3, 16, 16)] * 3
    for (x, y), (x2, y2) in zip(whole[1:], tail):
        assert torch.equal(x, x2) and torch.equal(y, y2)  # same crops from any position, any workers
    other_epoch = next(batches(d.train, order, 4, seed=1, epoch=4))[0]
    assert not torch.equal(whole[0][0], other_epoch)


def test_synthetic_samples_depend_on_their_index_only():
    d = data.load(TrainConfig(dataset="synthetic", image_size=8))
    x, y = d.train[13]
    assert x.shape == (3, 8, 8) and y == 3 and torch.equal(x, d.train[13][0])
    assert list(d.train_labels[:12]) == list(range(10)) + [0, 1]


@pytest.mark.parametrize("name, shape", [("small_cnn", (1, 8, 8)), ("resnet20", (3, 32, 32)),
                                         ("resnet18", (3, 32, 32)), ("mobilenet_v2", (3, 32, 32)),
                                         ("resnet50", (3, 32, 32))])
def test_models_build_the_same_on_every_rank_and_classify(name, shape):
    a, b = models.build(name, shape, 7, seed=4), models.build(name, shape, 7, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    a.eval()
    assert a(torch.randn(2, *shape)).shape == (2, 7)


def test_resnet20_has_the_papers_size():
    assert sum(p.numel() for p in models.build("resnet20", (3, 32, 32), 10).parameters()) == pytest.approx(
        0.27e6, rel=0.01)


# ---------------------------------------------------------------- metrics


def test_records_must_match_their_schema():
    record = {"event": "train", "step": 3, "epoch": 0.5, "lr": 0.1, "loss": 2.0, "accuracy": 0.2,
              "consensus_distance": 0.01, "compute_time": 0.002, "communication_time": 0.001,
              "samples_per_s": 900.0, "time": 1.5}
    assert check_record(record) is record
    with pytest.raises(ValueError, match="differ"):
        check_record({**record, "extra": 1})
    with pytest.raises(ValueError, match="not a finite number"):
        check_record({**record, "loss": float("nan")})
    with pytest.raises(ValueError, match="unknown event"):
        check_record({**record, "event": "other"})


def test_a_resumed_log_drops_the_records_after_its_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, active=True)
    for step in (2, 4, 6):
        log.write({"event": "eval", "step": step, "epoch": step / 2, "test_loss": 1.0, "test_accuracy": 0.5,
                   "worker_test_loss": 1.0, "worker_test_accuracy": 0.5, "worker_test_accuracy_min": 0.4,
                   "worker_test_accuracy_max": 0.6, "consensus_distance": 0.1, "time": step})
    assert [r["step"] for r in MetricsLog(tmp_path, active=True, saved={"step": 4}).records] == [2, 4]
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl")] == [2, 4]


def _eval_record(step):
    return {"event": "eval", "step": step, "epoch": step / 2, "test_loss": 1.0, "test_accuracy": 0.5,
            "worker_test_loss": 1.0, "worker_test_accuracy": 0.5, "worker_test_accuracy_min": 0.4,
            "worker_test_accuracy_max": 0.6, "consensus_distance": 0.1, "time": step}


def test_a_line_cut_short_at_the_end_is_dropped_with_a_warning_elsewhere_it_names_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    whole = "".join(json.dumps(_eval_record(step)) + "\n" for step in (2, 4))
    warnings = []
    for torn in ('{"event": "eval", "step": 6, "epo', '{"event": "ev', "{", "\x00\x00\x00", "[1, 2]"):
        path.write_text(whole + torn)
        assert [r["step"] for r in read_records(path, warn=warnings.append)] == [2, 4]
        assert "dropped its last line (3), cut short" in warnings[-1]
    path.write_text(whole.replace("\n", "\nnot json\n", 1))
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: .*the file is damaged"):
        read_records(path)


# ---------------------------------------------------------------- one-rank runs in process


def _stop_at(monkeypatch, step):
    """Trainer.train_step that raises SIGTERM in the step that ends at ``step``."""
    from mpidec.train import loop

    original = loop.Trainer.train_step

    def train_step(self, *args):
        original(self, *args)
        if self.step + 1 == step:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(loop.Trainer, "train_step", train_step)


def test_a_run_stopped_with_a_torn_metrics_line_resumes_without_losing_or_repeating_records(tmp_path, monkeypatch):
    settings = dict(algorithm="DmSGD", epochs=2, lr=0.4, log_every=5, progress=False, checkpoint_every=0)
    whole = train(TrainConfig(**settings, out=str(tmp_path / "whole")))
    with monkeypatch.context() as patch:
        _stop_at(patch, 47)
        stopped = train(TrainConfig(**settings, out=str(tmp_path / "parts")))
    assert stopped["status"] == "preempted" and stopped["steps"] == 47 and stopped["stopped_by"] == "SIGTERM"
    log = tmp_path / "parts" / "metrics.jsonl"
    with open(log, "a") as f:  # what a crash after the checkpoint leaves: a later record, and a torn one
        f.write(json.dumps({**read_records(log)[-1], "step": 50}) + "\n" + '{"event": "train", "st')
    resumed = train(TrainConfig(**settings, out=str(tmp_path / "parts"), resume=True))
    assert resumed["status"] == "finished" and resumed["test_accuracy"] == whole["test_accuracy"]
    numbers = ("event", "step", "loss", "test_accuracy", "consensus_distance")
    assert [{k: r.get(k) for k in numbers} for r in read_records(log)] == \
           [{k: r.get(k) for k in numbers} for r in read_records(tmp_path / "whole" / "metrics.jsonl")]
    text, _ = compare([tmp_path / "parts"])  # and compare reads it
    assert text.splitlines()[2].startswith("DmSGD")


def test_summary_status_says_running_preempted_finished_or_failed(tmp_path, monkeypatch):
    config = TrainConfig(algorithm="DSGD", epochs=1, lr=0.4, progress=False, out=str(tmp_path))
    status = lambda: json.loads((tmp_path / "summary.json").read_text())["status"]  # noqa: E731
    with monkeypatch.context() as patch:
        _stop_at(patch, 3)
        assert train(config)["status"] == status() == "preempted"
    (tmp_path / "data").write_text("")  # a later attempt refused after it began: never left "preempted"
    with pytest.raises(ConfigError, match="--data-dir"):
        train(TrainConfig(**{**config.to_dict(), "resume": True, "data_dir": str(tmp_path / "data")}))
    assert status() == "failed"
    assert train(TrainConfig(**{**config.to_dict(), "resume": True}))["status"] == status() == "finished"
    with pytest.raises(ConfigError, match="--batch-size: 32 -> 16"):
        train(TrainConfig(**{**config.to_dict(), "resume": True, "batch_size": 16}))
    assert status() == "finished"  # a refused attempt does not undo a finished run


def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path):
    config = TrainConfig(algorithm="DSGD", epochs=1, lr=0.4, progress=False, out=str(tmp_path))
    train(config)
    resume = TrainConfig(**{**config.to_dict(), "resume": True})
    rank_file = tmp_path / "checkpoints" / "step-00000044" / "rank-00000.pt"
    whole = rank_file.read_bytes()
    for damaged, message in [(whole[:len(whole) // 2], "cannot be read"), (b"", "cannot be read"),
                             (whole[:100], "cannot be read")]:
        rank_file.write_bytes(damaged)
        with pytest.raises(ConfigError, match=f"--resume: {rank_file} {message} .*drop --resume to start over"):
            train(resume)
    torch.save({"step": 3}, rank_file)
    with pytest.raises(ConfigError, match="is not a checkpoint of mpidec train"):
        train(resume)
    (tmp_path / "checkpoints" / "latest").write_text("../../etc\n")
    with pytest.raises(ConfigError, match="not a checkpoint folder name"):
        train(resume)


def test_an_unwritable_out_is_found_before_the_data_and_the_model(tmp_path, monkeypatch):
    from mpidec.train import data

    monkeypatch.setattr(data, "load", lambda config: pytest.fail("the data were loaded first"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=f"--out {tmp_path}/file/run: cannot write there \\(Not a directory\\)"):
        train(TrainConfig(out=str(tmp_path / "file" / "run"), progress=False))


@pytest.mark.parametrize("damage, message", [
    ("summary.json", "summary.json cannot be read"),
    ("metrics.jsonl", "metrics.jsonl, line 1: "),
    ("no metrics", None),
    ("torn metrics", None),
    ("unwritable plots", "--plots "),
])
def test_compare_of_damaged_runs_says_which_file(tmp_path, damage, message):
    run = tmp_path / "run"
    run.mkdir()
    summary = {"status": "finished", "algorithm": "DSGD", "test_accuracy": 0.5, "time": "oops"}
    (run / "summary.json").write_text("{not json" if damage == "summary.json" else json.dumps(summary))
    metrics = json.dumps(_eval_record(2)) + "\n" + json.dumps(_eval_record(4)) + "\n"
    if damage != "no metrics":
        (run / "metrics.jsonl").write_text({"metrics.jsonl": "garbage\n" + metrics,
                                            "torn metrics": metrics + '{"eve'}.get(damage, metrics))
    plots = tmp_path / "file" / "plots" if damage == "unwritable plots" else tmp_path / "plots"
    (tmp_path / "file").write_text("")
    done = run_cli("compare", str(run), "--plots", str(plots))
    if message is None:
        assert done.returncode == 0 and done.stdout.splitlines()[2].startswith("DSGD"), done.stderr
        assert "0.5000" in done.stdout and "?" in done.stdout  # a bad value is a "?", not a traceback
    else:
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_one_rank_run_writes_records_summary_plots_and_resumes(tmp_path, capsys):
    config = TrainConfig(algorithm="DmSGD", epochs=2, lr=0.4, log_every=20, progress=False, out=str(tmp_path))
    summary = train(config)
    records = read_records(tmp_path / "metrics.jsonl")
    for record in records:
        check_record(record)
    assert [r["step"] for r in records if r["event"] == "train"] == [20, 40, 60, 80, 88]
    assert [r["epoch"] for r in records if r["event"] == "eval"] == [0, 1, 2]
    assert summary["steps"] == 88 and summary["consensus_distance"] == 0.0 and summary["test_accuracy"] > 0.5
    assert all(Path(p).stat().st_size > 1000 for p in summary["plots"].values())
    assert (tmp_path / "summary.json").exists() and "test accuracy" in capsys.readouterr().out

    again = train(TrainConfig(**{**config.to_dict(), "resume": True}))  # already finished: nothing to do
    assert again["test_accuracy"] == summary["test_accuracy"] and again["steps"] == 88
    with pytest.raises(ConfigError, match="--batch-size: 32 -> 16"):
        train(TrainConfig(**{**config.to_dict(), "resume": True, "batch_size": 16}))
    table, plots = compare([tmp_path], tmp_path / "plots")
    assert table.splitlines()[2].startswith("DmSGD") and all(p.exists() for p in plots)


@pytest.mark.parametrize("argv, message", [
    (["--algorithm", "Adam"], "unknown algorithm 'Adam'; choose one of DSGD"),
    (["--algorithm", "D2"], "D2 has no momentum form: use momentum=0"),
    (["--algorithm", "DmSGD", "--option", "period=4"], "--option period: DmSGD has no such option (its options: "
                                                       "variant='atc'"),
    (["--algorithm", "LocalSGD", "--option", "period=0"], "invalid period 0"),
    (["--topology", "nonsense"], "--topology: unknown topology 'nonsense'"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--momentum", "1"], "--momentum must be in [0, 1)"),
    (["--warmup-epochs", "20"], "--warmup-epochs 20 is longer than --epochs 10"),
    (["--batch-size", "2000"], "lower --batch-size"),
    (["--model", "resnet18"], "--model resnet18 takes 3-channel images but the dataset has 1"),
    (["--model", "vgg"], "--model 'vgg' is not one of"),
    (["--dataset", "cifar10"], "--dataset cifar10 reads local files: pass --data-dir DIR"),
    (["--dataset", "imagenet", "--data-dir", "/no/such/folder"], "--data-dir /no/such/folder: no such folder"),
    (["--data-dir", "/tmp"], "--dataset digits needs no files: drop --data-dir"),
    (["--resume"], "--resume: no checkpoint in"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--momentum", "nan"], "--momentum must be a finite number, got nan"),
    (["--milestones", "1", "inf"], "--milestones must be a finite number, got inf"),
    (["--seed", "-1"], "--seed must be an integer in [0, 2**32), got -1"),
    (["--workers", "100000"], "--workers 100000: at most 64"),
    (["--out", ""], "--out is empty"),
])
def test_bad_settings_name_the_flag_and_exit_2(tmp_path, capsys, argv, message):
    assert cli.main(["train", "--no-progress", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpidec train: error: ") and message in err


def test_cifar10_folder_without_the_batches_says_what_to_pass(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path)]) == 2
    assert f"--data-dir {tmp_path}: no cifar-10-batches-py/ inside" in capsys.readouterr().err


# ---------------------------------------------------------------- the command line, as a user runs it


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mpidec", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar10", "--data-dir", "/no/such/folder"], "--data-dir /no/such/folder: no such folder"),
    (["--dataset", "cifar10", "--data-dir", "https://www.cs.toronto.edu/~kriz/"], "is a URL: mpidec train never "
                                                                                    "downloads"),
    (["--epochs", "three"], "argument --epochs: invalid int value: 'three'"),
])
def test_the_command_fails_fast_with_a_clear_message(args, message):
    done = run_cli("train", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_compare_of_a_folder_without_a_run_fails_clearly(tmp_path):
    done = run_cli("compare", str(tmp_path))
    assert done.returncode == 2 and "no summary.json" in done.stderr
