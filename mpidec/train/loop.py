"""The training loop: every rank runs :func:`train` with the same configuration.

Setting up has two phases. The first is local (data, model, checkpoint): it can fail on
some ranks only (a folder missing on one node), so the ranks then compare notes and all
stop with the same :class:`ConfigError` instead of leaving the others in a collective.
The second builds the optimizer, which is collective and fails the same way everywhere.

A step is: learning rate from the schedule, forward and backward on this rank's batch,
``optimizer.step()`` (local update and communication). At step boundaries come, when
due, a train record, an evaluation, a checkpoint, and the check whether any rank was
told to stop (SIGTERM), after which every rank checkpoints and returns.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import mpidec

from .. import topology as topologies
from ..atomic import write_json
from ..consensus import exact_distance
from . import algorithm, checkpoint, device, evaluation, models, plots
from . import data as datasets
from . import schedule as schedules
from .batches import batches
from .config import ConfigError, TrainConfig
from .metrics import Meter, MetricsLog
from .partition import Partition
from .preemption import Preemption


def train(config: TrainConfig) -> dict:
    """Train on every rank of ``MPI.COMM_WORLD``; returns the run's summary (on every rank)."""
    return Trainer(config).run()


def _agree(comm, error: str | None) -> None:
    """Raise the same ConfigError on every rank when setup failed on any (collective)."""
    failed = [(rank, message) for rank, message in enumerate(comm.allgather_object(error)) if message]
    if failed:
        rank, message = failed[0]
        raise ConfigError(message if all(m == message for _, m in failed) else f"on rank {rank}: {message}")


class Trainer:
    """One rank's part of a run: ``Trainer(config).run()`` on every rank."""

    def __init__(self, config: TrainConfig):
        from ..comm import MPICommunicator

        self.config = config.check()
        world = mpidec.init()
        self.rank, self.size = world.Get_rank(), world.Get_size()
        topology = None  # None: the algorithm's default
        if config.topology is not None:
            try:
                topology = topologies.build(config.topology, self.size)
            except topologies.TopologyError as exc:
                raise ConfigError(f"--topology: {exc}") from exc
        self.comm = MPICommunicator(allreduce="mpi")  # metrics, evaluation, agreement (no gossip)
        local_rank, local_size = device.local_rank_and_size()
        error, saved = None, None
        try:
            saved = self._prepare(local_rank, local_size)
        except ConfigError as exc:
            error = str(exc)
        _agree(self.comm, error)

        self.steps_per_epoch = self.partition.steps_per_epoch
        self.total_steps = config.epochs * self.steps_per_epoch
        self.schedule = schedules.from_config(config, self.steps_per_epoch, self.size)
        self.optimizer = algorithm.build(config, self.model.parameters(), self.schedule(0), topology)
        self.topology = self.optimizer.topology
        self.interval, self.run_totals = Meter(), Meter()  # metric sums: since the last record, whole run
        self.step = 0
        self.saved_step = None   # step of the last checkpoint
        self.previous_time = 0.0  # seconds trained before a resume
        self.averaged = None     # the averaged model, allocated at the first evaluation
        self.last_eval = self.last_train = None
        if saved is not None:
            self._load(saved)
        else:
            torch.manual_seed(config.seed * 1_000_003 + self.rank + 1)  # per-rank stream (dropout, ...)
        self.log = MetricsLog(config.out_dir, self.rank == 0, saved["step"] if saved else None)
        self.started = time.perf_counter()

    def _prepare(self, local_rank: int, local_size: int) -> dict | None:
        """The local part of setting up: device, data, model, partition, saved state (if resuming)."""
        config = self.config
        self.device = device.choose(config.device, local_rank, local_size)
        self.data = datasets.load(config)
        self.model_name = config.model or models.DEFAULT_MODEL[config.dataset]
        self.model = models.build(self.model_name, self.data.input_shape, self.data.num_classes,
                                  config.seed).to(self.device)
        try:
            self.partition = Partition(self.data.train_labels, self.size, self.rank, config.partition,
                                       config.seed, config.alpha, config.batch_size)
        except ValueError as exc:
            raise ConfigError(f"--partition {config.partition}: {exc}") from exc
        self.checkpoints = checkpoint.Checkpoints(config.out_dir, self.rank, self.size)
        if not config.resume:
            return None
        saved = self.checkpoints.load()
        changed = config.changed_invariants(saved["config"])
        if changed:
            raise ConfigError("--resume: the checkpoint was made with other settings; "
                              f"pass the saved ones: {'; '.join(changed)}")
        self.model.load_state_dict(saved["model"])  # before the optimizer exists (ADPSGD copies the model)
        return saved

    # ------------------------------------------------------------ state

    def _state(self) -> dict:
        return {"step": self.step, "config": self.config.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": checkpoint.rng_states(),
                "interval": self.interval.state_dict(), "run_totals": self.run_totals.state_dict(),
                "time": self.elapsed(), "last_eval": self.last_eval, "last_train": self.last_train}

    def _load(self, saved: dict) -> None:
        self.step = self.saved_step = saved["step"]
        self.previous_time = saved["time"]
        self.optimizer.load_state_dict(saved["optimizer"])
        checkpoint.set_rng_states(saved["rng"])
        self.interval.load_state_dict(saved["interval"])
        self.run_totals.load_state_dict(saved["run_totals"])
        self.last_eval, self.last_train = saved["last_eval"], saved["last_train"]

    def save(self) -> None:
        self.checkpoints.save(self.step, self._state(), self.comm)
        self.saved_step = self.step

    def elapsed(self) -> float:
        return self.previous_time + time.perf_counter() - self.started

    # ------------------------------------------------------------ the loop

    def run(self) -> dict:
        self._say(self._describe())
        if self.step == 0:
            self.evaluate()
        status = "finished"
        with Preemption(self.comm) as preemption, self._progress() as bar:
            stream = self._batches()
            while True:
                started = time.perf_counter()  # data loading counts as compute time
                batch = next(stream, None)
                if batch is None:
                    break
                self.train_step(*batch, started)
                bar.update(1)
                self._after_step()
                if preemption.requested():
                    status = "preempted"
                    break
        if status == "finished" and self.interval.steps:
            self.record_train()
        finish = getattr(self.optimizer, "finish", None)  # asynchronous optimizers drain here
        if callable(finish):
            finish()
        if status == "finished" and (self.last_eval is None or self.last_eval["step"] != self.step):
            self.evaluate()
        if self.saved_step != self.step:
            self.save()
        if status == "preempted":
            self._say(f"stopped by a signal at step {self.step}: checkpoint written; rerun with --resume to continue")
        self.log.close()
        return self._summary(status)

    def _batches(self):
        """The batches from the current step to the end, across epochs."""
        step = self.step
        while step < self.total_steps:
            epoch, first = divmod(step, self.steps_per_epoch)
            yield from batches(self.data.train, self.partition.epoch_order(epoch), self.config.batch_size,
                               start=first, seed=self.config.seed, epoch=epoch, workers=self.config.workers,
                               pin_memory=self.device.type == "cuda")
            step = (epoch + 1) * self.steps_per_epoch

    def train_step(self, images, labels, started: float) -> None:
        """One step on this rank's batch; ``started``: when fetching the batch began."""
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        self._synchronize()
        computed = time.perf_counter()
        self.optimizer.step()
        self._synchronize()
        communicated = time.perf_counter()
        correct = int((logits.argmax(1) == labels).sum())
        for meter in (self.interval, self.run_totals):
            meter.add(loss.item(), correct, len(labels), computed - started, communicated - computed)
        self.step += 1

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _after_step(self) -> None:
        """Records, evaluations and checkpoints due at this step (the final ones come after the loop)."""
        if self.step == self.total_steps:
            return
        if self.step % self.config.log_every == 0:
            self.record_train()
        epoch, within = divmod(self.step, self.steps_per_epoch)
        if within == 0 and epoch % self.config.eval_every == 0:
            self.evaluate()
        if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
            self.save()

    # ------------------------------------------------------------ measurements (collective)

    def record_train(self) -> None:
        """The train record of the steps since the previous one."""
        meter = self.interval
        sums = torch.tensor([meter.steps, meter.loss, meter.correct, meter.samples, meter.compute_time,
                             meter.communication_time], dtype=torch.float64)
        self.comm.allreduce([sums], average=False)
        steps, loss, correct, samples, compute, communication = sums.tolist()
        record = {"event": "train", "step": self.step, "epoch": self.step / self.steps_per_epoch,
                  "lr": self.optimizer.param_groups[0]["lr"], "loss": loss / steps, "accuracy": correct / samples,
                  "consensus_distance": exact_distance(list(self.model.parameters()), self.comm),
                  "compute_time": compute / steps, "communication_time": communication / steps,
                  "samples_per_s": samples * self.size / max(compute + communication, 1e-12),
                  "time": self.elapsed()}
        meter.reset()
        self._write(record)
        self.last_train = record

    def evaluate(self) -> None:
        """Every worker's model on the whole test set, the averaged model on slices of it."""
        test, batch, workers = self.data.test, self.config.batch_size, self.config.workers
        own_loss, own_correct, count = evaluation.score(self.model, test, range(len(test)), batch, self.device,
                                                        workers)
        workers_loss, workers_accuracy = zip(*self.comm.allgather_object((own_loss / count, own_correct / count)))
        self.averaged = evaluation.averaged_model(self.model, self.comm, into=self.averaged)
        mine = evaluation.rank_slice(len(test), self.size, self.rank)
        sums = torch.tensor(evaluation.score(self.averaged, test, mine, batch, self.device, workers),
                            dtype=torch.float64)
        self.comm.allreduce([sums], average=False)
        loss, correct, count = sums.tolist()
        record = {"event": "eval", "step": self.step, "epoch": self.step / self.steps_per_epoch,
                  "test_loss": loss / count, "test_accuracy": correct / count,
                  "worker_test_loss": sum(workers_loss) / self.size,
                  "worker_test_accuracy": sum(workers_accuracy) / self.size,
                  "worker_test_accuracy_min": min(workers_accuracy),
                  "worker_test_accuracy_max": max(workers_accuracy),
                  "consensus_distance": exact_distance(list(self.model.parameters()), self.comm),
                  "time": self.elapsed()}
        self._write(record)
        self.last_eval = record
        self._say(f"epoch {record['epoch']:5.2f}  step {self.step:>6}  "
                  + (f"train loss {self.last_train['loss']:.4f}  " if self.last_train else "")
                  + f"test accuracy {record['test_accuracy']:.4f} (averaged model), "
                  f"{record['worker_test_accuracy']:.4f} (workers, {min(workers_accuracy):.4f}-"
                  f"{max(workers_accuracy):.4f})  consensus distance {record['consensus_distance']:.3g}")

    def _write(self, record: dict) -> None:
        """Log ``record``; a ConfigError on every rank (the values are global) if training diverged."""
        broken = [key for key, value in record.items() if isinstance(value, float) and not math.isfinite(value)]
        if broken:
            raise ConfigError(f"training diverged: {record['event']} {broken[0]} is {record[broken[0]]} at step "
                              f"{self.step}; lower --lr (peak {self.schedule.peak:g}) or lengthen --warmup-epochs")
        self.log.write(record)

    def _summary(self, status: str) -> dict:
        """The run in one dictionary (collective); rank 0 also writes summary.json and the plots."""
        totals = self.run_totals
        sums = torch.tensor([totals.steps, totals.samples, totals.compute_time, totals.communication_time],
                            dtype=torch.float64)
        self.comm.allreduce([sums], average=False)
        steps, samples, compute, communication = sums.tolist()
        last_eval, last_train = self.last_eval or {}, self.last_train or {}
        summary = {
            "status": status, "algorithm": type(self.optimizer).__name__, "topology": self.topology.name,
            "world_size": self.size, "dataset": self.data.name, "partition": self.config.partition,
            "model": self.model_name, "epochs": self.config.epochs, "steps": self.step,
            "global_batch": self.config.batch_size * self.size, "peak_lr": self.schedule.peak,
            **{key: last_eval.get(key) for key in ("test_accuracy", "test_loss", "worker_test_accuracy",
                                                   "worker_test_accuracy_min", "worker_test_accuracy_max",
                                                   "consensus_distance")},
            "train_loss": last_train.get("loss"),
            "compute_time": compute / steps if steps else None,
            "communication_time": communication / steps if steps else None,
            "samples_per_s": samples * self.size / (compute + communication) if steps else None,
            "time": self.elapsed(), "out": str(Path(self.config.out_dir)), "metrics": str(self.log.path),
            "plots": {name: str(Path(self.config.out_dir) / f"{name}.png") for name in ("curves", "consensus")},
        }
        if self.rank == 0:
            runs = [(summary["algorithm"], self.log.records)]
            plots.plot_curves(runs, summary["plots"]["curves"])
            plots.plot_consensus(runs, summary["plots"]["consensus"])
            write_json(Path(self.config.out_dir) / "summary.json", summary)
            self._say(f"{status}: {self.step} steps in {summary['time']:.1f} s; test accuracy "
                      f"{summary['test_accuracy']:.4f} (averaged model); consensus distance "
                      f"{summary['consensus_distance']:.3g}; {self.config.out_dir}/summary.json, "
                      f"curves.png, consensus.png")
        return summary

    # ------------------------------------------------------------ output (rank 0)

    def _say(self, text: str) -> None:
        if self.rank == 0:
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    def _progress(self):
        return tqdm(total=self.total_steps, initial=self.step, unit="step", desc=type(self.optimizer).__name__,
                    disable=not (self.rank == 0 and self.config.progress), mininterval=1.0, leave=False)

    def _describe(self) -> str:
        c, schedule = self.config, self.schedule
        parameters = sum(p.numel() for p in self.model.parameters())
        split = c.partition + (f" (alpha {c.alpha:g})" if c.partition == "dirichlet" else "")
        rate = (f"lr {c.lr:g} for {c.reference_batch} samples -> {schedule.peak:g}" if c.lr_scaling == "linear"
                else f"lr {schedule.peak:g} (not scaled with the batch)")
        if schedule.warmup_steps and schedule.start < schedule.peak:
            rate += f", warm-up over {schedule.warmup_steps} steps from {schedule.start:g}"
        elif c.warmup_epochs:
            rate += ", no warm-up (the peak is not above --lr)"
        rate += {"cosine": ", cosine decay", "step": f", x{c.decay_factor:g} at steps {schedule.milestones}",
                 "none": ", no decay"}[c.decay]
        resumed = f" (resumed at step {self.step})" if c.resume else ""
        return (f"mpidec train: {type(self.optimizer).__name__} on {self.topology.name} over {self.size} "
                f"rank{'s' if self.size > 1 else ''}; {self.data.describe()}, {split} split; {self.model_name} "
                f"({parameters:,} parameters) on {self.device}\n"
                f"  batch {c.batch_size} x {self.size} = {c.batch_size * self.size}, {self.steps_per_epoch} steps/epoch "
                f"x {c.epochs} epochs = {self.total_steps} steps; {rate}\n"
                f"  output: {c.out_dir}{resumed}")
