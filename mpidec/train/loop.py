"""The training loop: every rank runs :class:`Trainer` with the same configuration
(through :func:`mpidec.train.run.train`).

Setting up has two phases. The first is local (:func:`mpidec.train.local.prepare`: output
folder, saved state, device, data, model, partition, held as ``trainer.local``): it can
fail on some ranks only (a folder missing on one node), so the ranks then compare notes
and all stop with the same :class:`ConfigError` instead of leaving the others in a
collective. The second builds the optimizer, which is collective and fails the same way
everywhere.

A step is: learning rate from the schedule, forward and backward on this rank's batch,
``optimizer.step()`` (local update and communication). At step boundaries come, when
due, a train record, an evaluation, a checkpoint, and the check whether any rank was
asked to stop (:mod:`mpidec.signals`). A request that comes at any other moment - during
start-up, an evaluation (which it cuts short), the final evaluation or the plots - is acted
on at the next boundary of the same kind, so every way of stopping ends with a checkpoint
of the last completed step, ``summary.json`` saying ``"preempted"``, and exit status 0.
The asynchronous algorithms run their own loop (:mod:`mpidec.train.asynchronous`);
:mod:`mpidec.train.run` picks the loop.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import mpidec

from .. import signals
from .. import topology as topologies
from ..consensus import exact_distance
from . import algorithm, checkpoint, device, evaluation, local, report
from . import schedule as schedules
from .batches import batches
from .config import ConfigError, TrainConfig
from .metrics import Meter, MetricsLog
from .preemption import Preemption


def _agree(comm, error: str | None) -> None:
    """Raise the same ConfigError on every rank when setup failed on any (collective)."""
    failed = [(rank, message) for rank, message in enumerate(comm.allgather_object(error)) if message]
    if failed:
        rank, message = failed[0]
        raise ConfigError(message if all(m == message for _, m in failed) else f"on rank {rank}: {message}")


class Trainer:
    """One rank's part of a run: ``Trainer(config).run()`` on every rank.

    One communicator serves the optimizer, the metrics, evaluation and checkpoints.
    ``allreduce``: its backend ('auto': Horovod when it can run here, else MPI).
    ``local``: this rank's checkpoints, device, data, model and partition
    (:class:`~mpidec.train.local.LocalSetup`).
    """

    allreduce = "auto"

    def __init__(self, config: TrainConfig):
        from ..comm import MPICommunicator

        self.config = config.check()
        world = mpidec.init()
        self.rank, self.size = world.Get_rank(), world.Get_size()
        self.comm = MPICommunicator(allreduce=self.allreduce)
        local_rank = device.local_rank()
        error, saved = None, None
        try:
            topology = self._topology()
            self.local, saved = local.prepare(self.config, self.rank, self.size, local_rank)
        except ConfigError as exc:
            error = str(exc)
        _agree(self.comm, error)
        self.steps_per_epoch = self.local.partition.steps_per_epoch
        self.total_steps = config.epochs * self.steps_per_epoch
        self.global_batch = config.batch_size * self.size
        self.schedule = schedules.from_config(config, self.steps_per_epoch, self.size)
        self.optimizer = algorithm.build(config, self.local.model.parameters(), self.schedule(0), topology, self.comm)
        self.topology = self.optimizer.topology
        self.interval, self.run_totals = Meter(), Meter()  # metric sums: since the last record, whole run
        self.step = 0
        self.saved_step = None   # step of the last checkpoint
        self.previous_time = 0.0  # seconds trained before a resume
        self.averaged = None     # the averaged model, allocated at the first evaluation
        self.last_eval = self.last_train = None
        self.checkpoint_seconds = None  # how long the last checkpoint took (this rank)
        if saved is not None:
            self._load(saved)
        else:
            torch.manual_seed(config.seed * 1_000_003 + self.rank + 1)  # per-rank stream (dropout, ...)
        self.log = MetricsLog(config.out_dir, self.rank == 0, saved)
        self.started = time.perf_counter()

    def _topology(self):
        """The --topology for this world size; None: the algorithm's default."""
        if self.config.topology is None:
            return None
        try:
            return topologies.build(self.config.topology, self.size)
        except topologies.TopologyError as exc:
            raise ConfigError(f"--topology: {exc}") from exc

    # ------------------------------------------------------------ state

    def _state(self) -> dict:
        return {"step": self.step, "config": self.config.to_dict(), "model": self.local.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": checkpoint.rng_states(),
                "interval": self.interval.state_dict(), "run_totals": self.run_totals.state_dict(),
                "time": self.elapsed(), "last_eval": self.last_eval, "last_train": self.last_train,
                "records": self.log.records if self.rank == 0 else None}

    def _load(self, saved: dict) -> None:
        self.step = self.saved_step = saved["step"]
        self.previous_time = saved["time"]
        self.optimizer.load_state_dict(saved["optimizer"])
        checkpoint.set_rng_states(saved["rng"])
        self.interval.load_state_dict(saved["interval"])
        self.run_totals.load_state_dict(saved["run_totals"])
        self.last_eval, self.last_train = saved["last_eval"], saved["last_train"]

    def save(self) -> None:
        started = time.perf_counter()
        self.local.checkpoints.save(self.step, self._state(), self.comm)
        self.saved_step = self.step
        self.checkpoint_seconds = time.perf_counter() - started
        report.check_launcher_grace(self, self.checkpoint_seconds)

    def progress_counts(self) -> tuple[int, list[int]]:
        """(samples trained on by all ranks together, steps of each rank), for the summary."""
        return self.step * self.global_batch, [self.step] * self.size

    def elapsed(self) -> float:
        return self.previous_time + time.perf_counter() - self.started

    # ------------------------------------------------------------ the run

    def run(self) -> dict:
        """Train to the end or to a stop request; the summary (status "finished" or "preempted")."""
        self._say(report.describe(self))
        status = self._train(Preemption(self.comm))
        status = self._wind_up(status)
        return report.summary(self, status)

    def _train(self, stop: Preemption) -> str:
        """The steps from the current one to the end: "finished", or "preempted" at a step boundary."""
        if stop.requested() or not self._evaluate_if_due():
            return "preempted"
        with self._progress() as bar:
            stream = self._batches(self.step, self.total_steps)
            while True:
                started = time.perf_counter()  # data loading counts as compute time
                batch = next(stream, None)
                if batch is None:
                    return "finished"
                self.train_step(*batch, started, self.schedule(self.step))
                self.step += 1
                bar.update(1)
                if not self._after_step() or stop.requested():
                    return "preempted"

    def _wind_up(self, status: str) -> str:
        """The final record and evaluation, and the checkpoint of the last step (any status)."""
        if status == "finished":
            if self.interval.steps:
                self.record_train()
            if not self._evaluate_if_due():
                status = "preempted"
        if self.saved_step != self.step:
            self.save()
        return status

    def _batches(self, first: int, end: int | None):
        """This rank's batches of steps ``first``, ``first + 1``, ... up to ``end`` (None: no end)."""
        step = first
        while end is None or step < end:
            epoch, within = divmod(step, self.steps_per_epoch)
            yield from batches(self.local.data.train, self.local.partition.epoch_order(epoch), self.config.batch_size,
                               start=within, seed=self.config.seed, epoch=epoch, workers=self.config.workers,
                               pin_memory=self.local.device.type == "cuda")
            step = (epoch + 1) * self.steps_per_epoch

    def train_step(self, images, labels, started: float, lr: float) -> None:
        """One step on this rank's batch at learning rate ``lr``; ``started``: when fetching the batch began."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        on = self.local.device
        images, labels = images.to(on, non_blocking=True), labels.to(on, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.local.model(images)
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

    def _synchronize(self) -> None:
        if self.local.device.type == "cuda":
            torch.cuda.synchronize(self.local.device)

    def _after_step(self) -> bool:
        """Records, evaluations and checkpoints due at this step (the final ones come after the
        loop); False when a stop request cut the evaluation short."""
        if self.step == self.total_steps:
            return True
        if self.step % self.config.log_every == 0:
            self.record_train()
        if not self._evaluate_if_due():
            return False
        if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
            self.save()
        return True

    # ------------------------------------------------------------ measurements (collective)

    def _evaluate_if_due(self) -> bool:
        """The evaluation due at this step (every --eval-every epochs and at the end) unless it
        is done already (a resumed run); False when a stop request cut it short."""
        epoch, within = divmod(self.step, self.steps_per_epoch)
        due = (within == 0 and epoch % self.config.eval_every == 0) or self.step == self.total_steps
        if not due or (self.last_eval is not None and self.last_eval["step"] == self.step):
            return True
        return self.evaluate()

    def record_train(self) -> None:
        """The train record of the steps since the previous one."""
        meter = self.interval
        sums = torch.tensor([meter.steps, meter.loss, meter.correct, meter.samples, meter.compute_time,
                             meter.communication_time], dtype=torch.float64)
        self.comm.allreduce([sums], average=False)
        steps, loss, correct, samples, compute, communication = sums.tolist()
        # the job's pace is the slowest rank's: a rank that waits for it does so outside step(), here
        slowest = self.comm.allreduce_scalar(meter.compute_time + meter.communication_time, op="max")
        record = {"event": "train", "step": self.step, "epoch": self.step / self.steps_per_epoch,
                  "lr": self.optimizer.param_groups[0]["lr"], "loss": loss / steps, "accuracy": correct / samples,
                  "consensus_distance": exact_distance(list(self.local.model.parameters()), self.comm),
                  "compute_time": compute / steps, "communication_time": communication / steps,
                  "samples_per_s": samples / max(slowest, 1e-12),
                  "time": self.elapsed()}
        meter.reset()
        self._write(record)
        self.last_train = record

    def evaluate(self) -> bool:
        """Every worker's model on the whole test set, the averaged model on slices of it.
        A stop request cuts the scoring short: then no record, and False (on every rank)."""
        model, test, on = self.local.model, self.local.data.test, self.local.device
        batch, workers = self.config.batch_size, self.config.workers
        self.averaged = evaluation.averaged_model(model, self.comm, into=self.averaged)
        own = evaluation.score(model, test, range(len(test)), batch, on, workers, signals.requested)
        mine = evaluation.rank_slice(len(test), self.size, self.rank)
        part = own and evaluation.score(self.averaged, test, mine, batch, on, workers, signals.requested)
        scores = self.comm.allgather_object((own, part) if part else None)
        if any(s is None for s in scores):
            return False
        workers_loss = [loss / count for (loss, _, count), _ in scores]
        workers_accuracy = [correct / count for (_, correct, count), _ in scores]
        loss, correct, count = (sum(values) for values in zip(*(part for _, part in scores)))
        record = {"event": "eval", "step": self.step, "epoch": self.step / self.steps_per_epoch,
                  "test_loss": loss / count, "test_accuracy": correct / count,
                  "worker_test_loss": sum(workers_loss) / self.size,
                  "worker_test_accuracy": sum(workers_accuracy) / self.size,
                  "worker_test_accuracy_min": min(workers_accuracy),
                  "worker_test_accuracy_max": max(workers_accuracy),
                  "consensus_distance": exact_distance(list(self.local.model.parameters()), self.comm),
                  "time": self.elapsed()}
        self._write(record)
        self.last_eval = record
        self._say(report.eval_line(record, self.last_train))
        return True

    def _write(self, record: dict) -> None:
        """Log ``record``; TrainingDiverged on every rank (the values are global) if it is not finite."""
        broken = report.non_finite(record)
        if broken:
            raise report.TrainingDiverged(f"training diverged: {record['event']} {broken} is {record[broken]} at step "
                              f"{self.step}; lower --lr (peak {self.schedule.peak:g}) or lengthen --warmup-epochs")
        self.log.write(record)

    # ------------------------------------------------------------ output (rank 0)

    def _say(self, text: str) -> None:
        if self.rank == 0:
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    def _progress(self):
        return tqdm(total=self.total_steps, initial=self.step, unit="step", desc=type(self.optimizer).__name__,
                    disable=not (self.rank == 0 and self.config.progress), mininterval=1.0, leave=False)
