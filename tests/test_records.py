"""A run's records (mpidec.train.metrics) and the comparison of runs (mpidec compare): the
schema, resumed logs, torn and damaged files, each error naming the file."""

import json

import pytest

from commands import run_mpidec
from mpidec.train.metrics import MetricsLog, check_record, read_records


def _eval_record(step):
    return {"event": "eval", "step": step, "epoch": step / 2, "test_loss": 1.0, "test_accuracy": 0.5,
            "worker_test_loss": 1.0, "worker_test_accuracy": 0.5, "worker_test_accuracy_min": 0.4,
            "worker_test_accuracy_max": 0.6, "consensus_distance": 0.1, "time": step}


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
        log.write(_eval_record(step))
    assert [r["step"] for r in MetricsLog(tmp_path, active=True, saved={"step": 4}).records] == [2, 4]
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl")] == [2, 4]


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
    done = run_mpidec("compare", str(run), "--plots", str(plots))
    if message is None:
        assert done.returncode == 0 and done.stdout.splitlines()[2].startswith("DSGD"), done.stderr
        assert "0.5000" in done.stdout and "?" in done.stdout  # a bad value is a "?", not a traceback
    else:
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_compare_of_a_folder_without_a_run_fails_clearly(tmp_path):
    done = run_mpidec("compare", str(tmp_path))
    assert done.returncode == 2 and "no summary.json" in done.stderr
