"""What a run says about itself: the lines rank 0 prints, and ``summary.json``.

``summary.json`` (in ``--out``, written atomically by rank 0) always holds ``"status"``:

- ``"running"``: written when a run starts; left there when its processes die (kill -9,
  a crash: see the job's log);
- ``"finished"``: trained to the end, evaluated, checkpointed;
- ``"preempted"``: stopped by a signal; ``"checkpoint"`` names the folder to resume from
  (``--resume``), ``"stopped_by"`` the signal, ``"checkpoint_seconds"`` how long writing
  it took (rank 0, waiting for the others included);
- ``"failed"``: a setting that cannot work (:class:`~mpidec.train.config.ConfigError`), or a
  run that diverged (:class:`TrainingDiverged`); ``"error"`` says which flag to change (a
  finished run stays "finished" when a later attempt on it is refused).

A batch script decides from it whether to requeue (``"preempted"``), not from an exit code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .. import signals
from ..atomic import write_json
from ..runtime import launch_rank
from . import plots

SUMMARY = "summary.json"


class TrainingDiverged(RuntimeError):
    """A record of the run holds a non-finite number (the same on every rank: records are
    global); the message says which and what to lower."""


def mark_running(out_dir) -> dict | None:
    """Rank 0: ``summary.json`` says "running" from the start of an attempt (so a crash never
    leaves an earlier attempt's "preempted" behind); returns the summary it replaced."""
    if launch_rank() != 0:
        return None
    path = Path(out_dir) / SUMMARY
    try:
        previous = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        previous = None
    _write_status(out_dir, {"status": "running"})
    return previous if isinstance(previous, dict) else None


def mark_failed(out_dir, error: str, previous: dict | None) -> None:
    """Rank 0, after a ConfigError or TrainingDiverged: "failed" with the error, except that a
    finished run stays finished (the attempt changed nothing: its settings were refused before
    training)."""
    if launch_rank() == 0:
        finished = previous if previous and previous.get("status") == "finished" else None
        _write_status(out_dir, finished or {"status": "failed", "error": error})


def _write_status(out_dir, summary: dict) -> None:
    try:  # best effort: an unwritable --out is reported by the setup checks
        write_json(Path(out_dir) / SUMMARY, {**summary, "out": str(out_dir)})
    except OSError:
        pass


def non_finite(record: dict) -> str | None:
    """The first key of ``record`` whose value is a float but not a finite one."""
    return next((key for key, value in record.items() if isinstance(value, float) and not math.isfinite(value)),
                None)


def eval_line(record: dict, last_train: dict | None) -> str:
    return (f"epoch {record['epoch']:5.2f}  step {record['step']:>6}  "
            + (f"train loss {last_train['loss']:.4f}  " if last_train else "")
            + f"test accuracy {record['test_accuracy']:.4f} (averaged model), "
            f"{record['worker_test_accuracy']:.4f} (workers, {record['worker_test_accuracy_min']:.4f}-"
            f"{record['worker_test_accuracy_max']:.4f})  consensus distance {record['consensus_distance']:.3g}")


def summary(t, status: str) -> dict:
    """The run in one dictionary (collective); rank 0 writes summary.json, then the plots
    (skipped when a stop was requested: ``mpidec compare OUT --plots OUT`` draws them)."""
    gathered = t.comm.allgather_object((t.run_totals.state_dict(), signals.requested()))
    steps, samples, compute, communication = (sum(totals[key] for totals, _ in gathered) for key in
                                              ("steps", "samples", "compute_time", "communication_time"))
    stopped_by = next((request for _, request in gathered if request), None)
    last_eval, last_train = t.last_eval or {}, t.last_train or {}
    out = Path(t.config.out_dir)
    trained, steps_per_rank = t.progress_counts()
    result = {
        "status": status, "stopped_by": stopped_by,
        "checkpoint": str(t.local.checkpoints.root / f"step-{t.saved_step:08d}") if t.saved_step is not None else None,
        "checkpoint_seconds": t.checkpoint_seconds,
        "algorithm": type(t.optimizer).__name__, "topology": t.topology.name,
        "world_size": t.size, "dataset": t.local.data.name, "partition": t.config.partition,
        "model": t.local.model_name, "epochs": t.config.epochs, "steps": t.step, "samples": trained,
        "steps_per_rank": steps_per_rank, "global_batch": t.global_batch, "peak_lr": t.schedule.peak,
        **{key: last_eval.get(key) for key in ("test_accuracy", "test_loss", "worker_test_accuracy",
                                               "worker_test_accuracy_min", "worker_test_accuracy_max",
                                               "consensus_distance")},
        "train_loss": last_train.get("loss"),
        "compute_time": compute / steps if steps else None,
        "communication_time": communication / steps if steps else None,
        "samples_per_s": samples / max(totals["compute_time"] + totals["communication_time"]
                                       for totals, _ in gathered) if steps else None,
        "time": t.elapsed(), "out": str(out), "metrics": str(t.log.path),
        "plots": {name: str(out / f"{name}.png") for name in ("curves", "consensus")},
    }
    if t.rank == 0:
        write_json(out / SUMMARY, result)
        t.log.close()
        drawn = not (stopped_by or signals.requested())
        if drawn:
            runs = [(result["algorithm"], t.log.records)]
            plots.plot_curves(runs, result["plots"]["curves"])
            plots.plot_consensus(runs, result["plots"]["consensus"])
        t._say(_final_line(result, drawn))
    t.comm.allreduce_scalar(0.0)  # every rank leaves together, after rank 0's files
    return result


def _final_line(result: dict, drawn: bool) -> str:
    accuracy = result["test_accuracy"]
    line = (f"{result['status']}: {result['steps']} steps in {result['time']:.1f} s; test accuracy "
            + (f"{accuracy:.4f}" if accuracy is not None else "-") + " (averaged model); "
            f"{result['out']}/{SUMMARY}" + (", curves.png, consensus.png" if drawn else
                                           f" (plots skipped: mpidec compare {result['out']} --plots {result['out']})"))
    if result["status"] == "preempted":
        line += (f"\nstopped by {result['stopped_by']} at step {result['steps']}: checkpoint "
                 f"{result['checkpoint']}; run again with --resume to continue")
    return line


def describe(t) -> str:
    c, schedule = t.config, t.schedule
    parameters = sum(p.numel() for p in t.local.model.parameters())
    split = c.partition + (f" (alpha {c.alpha:g})" if c.partition == "dirichlet" else "")
    rate = (f"lr {c.lr:g} for {c.reference_batch} samples -> {schedule.peak:g}" if c.lr_scaling == "linear"
            else f"lr {schedule.peak:g} (not scaled with the batch)")
    if schedule.warmup_steps and schedule.start < schedule.peak:
        rate += f", warm-up over {schedule.warmup_steps} steps from {schedule.start:g}"
    elif c.warmup_epochs:
        rate += ", no warm-up (the peak is not above --lr)"
    rate += {"cosine": ", cosine decay", "step": f", x{c.decay_factor:g} at steps {schedule.milestones}",
             "none": ", no decay"}[c.decay]
    resumed = f" (resumed at step {t.step})" if c.resume else ""
    text = (f"mpidec train: {type(t.optimizer).__name__} on {t.topology.name} over {t.size} "
            f"rank{'s' if t.size > 1 else ''}; {t.local.data.describe()}, {split} split; {t.local.model_name} "
            f"({parameters:,} parameters) on {t.local.device}\n"
            f"  batch {c.batch_size} x {t.size} = {t.global_batch}, {t.steps_per_epoch} steps/epoch "
            f"x {c.epochs} epochs = {t.total_steps} steps; {rate}\n"
            f"  output: {c.out_dir}{resumed}")
    if getattr(t, "asynchronous", False):
        text += ("\n  asynchronous: no rank waits for another; records of rank 0's own steps, evaluations at the "
                 "start and the end, checkpoints at the end and on a stop request")
    if signals.launched_by_open_mpi() and signals.launcher_grace() <= 2:
        text += ("\n  note: a signal to mpiexec leaves the ranks 2 s to checkpoint before Open MPI kills them; "
                 "export OMPI_MCA_odls_base_sigkill_timeout=10 where mpiexec starts for 20 s (docs/quickstart.md)")
    return text


def check_launcher_grace(t, checkpoint_seconds: float) -> None:
    """Warn once (rank 0) when a step and a checkpoint take longer than Open MPI's launcher
    waits between its first signal and SIGKILL: a stop would then lose work."""
    grace, totals = signals.launcher_grace(), t.run_totals
    step = (totals.compute_time + totals.communication_time) / max(totals.steps, 1)
    if grace is None or t.rank != 0 or getattr(t, "grace_warned", False) or checkpoint_seconds + step < 0.8 * grace:
        return
    t.grace_warned = True
    suggested = math.ceil(1.5 * (checkpoint_seconds + step) / 2) + 1
    t._say(f"warning: a checkpoint took {checkpoint_seconds:.1f} s and a step {step:.2g} s, but mpiexec kills "
           f"the ranks {grace:g} s after it is signalled (2 x odls_base_sigkill_timeout): a stop would lose the "
           f"steps since the last checkpoint. Export OMPI_MCA_odls_base_sigkill_timeout={suggested} (or more) "
           "where mpiexec starts (docs/quickstart.md)")
