"""mpidec train on one rank, in process: records, summary, plots, stop and resume, damaged
checkpoints, and the errors that bad settings give (in process and through the command line)."""

import json
import signal
from pathlib import Path

import pytest
import torch

from commands import run_mpidec
from mpidec import cli
from mpidec.train import ConfigError, TrainConfig, train
from mpidec.train.compare import compare
from mpidec.train.metrics import check_record, read_records
from mpidec.train.report import TrainingDiverged


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


def test_a_diverged_run_is_its_own_error_failed_in_the_summary_and_exit_status_1(tmp_path, capsys):
    settings = dict(algorithm="DSGD", epochs=1, lr=1e30, log_every=1, progress=False, out=str(tmp_path))
    with pytest.raises(TrainingDiverged, match="train loss is nan at step 2; lower --lr"):
        train(TrainConfig(**settings))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("training diverged")
    assert cli.main(["train", "--algorithm", "DSGD", "--epochs", "1", "--lr", "1e30", "--log-every", "1",
                     "--no-progress", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("mpidec train: error: training diverged: train loss is nan")


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


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar10", "--data-dir", "/no/such/folder"], "--data-dir /no/such/folder: no such folder"),
    (["--dataset", "cifar10", "--data-dir", "https://www.cs.toronto.edu/~kriz/"], "is a URL: mpidec train never "
                                                                                    "downloads"),
    (["--epochs", "three"], "argument --epochs: invalid int value: 'three'"),
])
def test_the_command_fails_fast_with_a_clear_message(args, message):
    done = run_mpidec("train", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
