"""The asynchronous loop (ADPSGD): no collective between the first step and the last.

A synchronous run meets at every step boundary (train records, evaluations and the stop
check are collectives), so the slowest rank sets everyone's pace. Here every rank steps at
its own pace, and what is global goes through the shared sample counter
(``comm.counter()``: one atomic fetch-and-add per step, nothing waits). It lives on a
passive worker (``ADPSGD.counter_rank``): on rank 0, an active worker, the fast passive
worker of 4 x 1 at 200 Mbit/s with one host 8x slower waited up to 49 ms a step for its
ticket while rank 0 averaged with the slow host, and the job stepped in 180-190 ms,
against 105-205 (median 144) with the counter on rank 1 (docs/cluster.md).

- progress: each step trains on a ticket of ``--batch-size`` samples; the global step of
  the learning-rate schedule and of the records is ``ticket // global batch``. A rank
  draws its next ticket as a step starts (``counter.iadd``: on a thread) and waits for it
  when the step is done: the owner serves the add in its own progress, late while it is
  busy in MPI (emulated cluster, 2 x 2 at 50 Mbit/s, counter on rank 0: drawn in line, a
  ticket took 16-45 ms of steps of 100-650 ms; drawn during the step, the wait after it
  is 0.2-5 ms);
- the end: the run stops when the tickets reach the sample budget of the synchronous run
  (``epochs x steps per epoch x global batch``): together the ranks train on exactly that
  many samples, the fast ranks on more of them than the slow ones;
- a stop request on any rank adds ``STOP`` to the counter: every rank sees it in a
  ticket within two of its own steps (the next ticket may have been drawn already);
- records: rank 0 writes train records of its own steps (loss, accuracy, times) with the
  global sample rate; the consensus distance, which needs every model, is None there;
- evaluations: at the start and at the end, after ``finish()`` (collective), when no
  model moves any more: the averaged model, every worker's, the consensus distance;
- checkpoints: at the end and on a stop request (a periodic one would need every rank at
  once: ``--checkpoint-every`` is not used). ``--resume`` continues each rank's data order
  and the counter; the interleaving of the averages is not reproducible, so neither is a
  resumed run, bit for bit.
"""

from __future__ import annotations

import time

from .. import signals
from .loop import Trainer
from .preemption import Preemption

STOP = 1 << 50  # added to the counter by a rank asked to stop: more than any sample budget


class AsyncTrainer(Trainer):
    """:class:`~mpidec.train.loop.Trainer` for optimizers with ``finish()`` (ADPSGD)."""

    asynchronous = True
    allreduce = "mpi"  # Horovod's background thread must not drive MPI beside the RMA progress thread

    def __init__(self, config):
        self.samples = 0           # samples trained on by all ranks, as of the start (or resume)
        self.local_steps = 0       # this rank's steps, resumed runs included (its data position)
        self.run_steps = 0         # this rank's steps in this process
        self.steps_per_rank = None
        super().__init__(config)
        self.counter = None

    def _state(self) -> dict:
        return {**super()._state(), "samples": self.samples, "local_steps": self.local_steps}

    def _load(self, saved: dict) -> None:
        super()._load(saved)
        self.samples, self.local_steps = saved["samples"], saved["local_steps"]

    def progress_counts(self) -> tuple[int, list[int]]:
        return self.samples, self.steps_per_rank or [self.local_steps] * self.size

    def _evaluate_if_due(self) -> bool:
        """Only at the first step and the last: in between no rank waits for the others."""
        if self.step not in (0, self.total_steps) or (self.last_eval and self.last_eval["step"] == self.step):
            return True
        return self.evaluate()

    def _train(self, stop: Preemption) -> str:
        if stop.requested() or not self._evaluate_if_due():  # collectives, before the first step
            return "preempted"
        self.counter = self.comm.counter(owner=getattr(self.optimizer, "counter_rank", 0))
        if self.rank == 0 and self.samples:
            self.counter.add(self.samples)
        self.comm.allreduce_scalar(0.0)  # every rank sees the resumed count before its first ticket
        return self._steps()

    def _steps(self) -> str:
        """This rank's steps until the tickets reach the budget or a stop request; no collective."""
        batch, budget = self.config.batch_size, self.total_steps * self.global_batch
        stream = self._batches(self.local_steps, None)
        recorded = (self.samples, self.elapsed())  # (ticket, time) of rank 0's last record
        pending = self.counter.iadd(batch)
        with self._progress() as bar:
            while True:
                ticket = pending.wait()
                if signals.requested():
                    self.counter.add(STOP)
                    return "preempted"
                if ticket >= STOP:
                    return "preempted"
                if ticket >= budget:
                    return "finished"
                pending = self.counter.iadd(batch)  # the next step's ticket, drawn while this one computes
                started = time.perf_counter()
                self.train_step(*next(stream), started, self.schedule(ticket // self.global_batch))
                self.local_steps += 1
                self.run_steps += 1
                if self.rank == 0:
                    bar.update(min(ticket + batch, budget) // self.global_batch - bar.n)
                    if (ticket + batch) // (self.config.log_every * self.global_batch) > recorded[0] // (
                            self.config.log_every * self.global_batch):
                        recorded = self._record(ticket + batch, recorded)

    def _record(self, ticket: int, recorded: tuple[int, float]) -> tuple[int, float]:
        """Rank 0's train record at global sample ``ticket``; returns the new (ticket, time)."""
        meter, now = self.interval, self.elapsed()
        step = ticket // self.global_batch
        record = {"event": "train", "step": step, "epoch": step / self.steps_per_epoch,
                  "lr": self.optimizer.param_groups[0]["lr"], "loss": meter.loss / meter.steps,
                  "accuracy": meter.correct / meter.samples, "consensus_distance": None,
                  "compute_time": meter.compute_time / meter.steps,
                  "communication_time": meter.communication_time / meter.steps,
                  "samples_per_s": (ticket - recorded[0]) / max(now - recorded[1], 1e-12), "time": now}
        meter.reset()
        self._write(record)
        self.last_train = record
        return ticket, now

    def _wind_up(self, status: str) -> str:
        """``finish()`` (every rank out of ``step()``), the exact sample count, the status it
        gives, the last record, the final evaluation, and the checkpoint."""
        self.optimizer.finish(average=False)  # each rank keeps its own model; the evaluation averages
        if self.counter is not None:
            self.counter.free()
        gathered = self.comm.allgather_object((self.run_steps, self.local_steps))
        self.samples += sum(steps for steps, _ in gathered) * self.config.batch_size
        self.run_steps = 0
        self.steps_per_rank = [steps for _, steps in gathered]
        self.step = self.samples // self.global_batch
        # the same status on every rank: a rank may have seen the end of the budget, and
        # another a stop request added after it; what counts is whether the samples are done
        status = "finished" if self.samples >= self.total_steps * self.global_batch else "preempted"
        if status == "finished":
            if self.rank == 0 and self.interval.steps:
                self._record(self.samples, ((self.last_train or {}).get("step", 0) * self.global_batch,
                                            (self.last_train or {}).get("time", 0.0)))
            if not self._evaluate_if_due():
                status = "preempted"
        self.save()
        return status
