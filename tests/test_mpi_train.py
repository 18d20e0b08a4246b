"""mpidec train on 4 MPI ranks: every algorithm learns; a run stopped at any phase and
resumed equals an uninterrupted one, bit for bit; ADPSGD does not wait for a straggler."""

import signal
import time

import pytest
import torch

from mpidec import optim
from mpidec.train import TrainConfig, algorithm, evaluation, loop, plots, train
from mpidec.train import data as datasets
from mpidec.train.metrics import check_record, read_records

pytestmark = pytest.mark.mpi(min_size=2)

# Each algorithm's settings on the embedded digits, 3 epochs of 11 steps (4 ranks x 32 samples).
SETTINGS = {"D2": {"momentum": 0.0, "lr": 1.2}, "SignumMV": {"lr": 0.01}}  # a sign step moves every weight by lr
FAST = dict(dataset="digits", epochs=3, batch_size=32, lr=0.4, log_every=3, progress=False)


@pytest.fixture
def world():
    from mpi4py import MPI

    return MPI.COMM_WORLD


@pytest.fixture
def shared_dir(world, tmp_path):
    """One folder for all ranks (rank 0's temporary folder)."""
    return world.bcast(str(tmp_path), root=0)


def records_of(world, out: str) -> list[dict]:
    world.Barrier()  # rank 0 has written everything
    return read_records(f"{out}/metrics.jsonl")


@pytest.mark.parametrize("name", list(optim.ALGORITHMS))
def test_every_algorithm_learns_the_digits(world, shared_dir, name):
    out = f"{shared_dir}/{name}"
    summary = train(TrainConfig(**{**FAST, "algorithm": name, "out": out, **SETTINGS.get(name, {})}))
    records = records_of(world, out)
    for record in records:
        check_record(record)
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert summary["status"] == "finished" and summary["steps"] == 33 and summary["world_size"] == world.Get_size()
    asynchronous = hasattr(optim.by_name(name), "finish")  # evaluates at the start and the end only
    # asynchronous: rank 0 records at its own pace, so how many of the 33 steps are its own is timing
    assert 2 <= len(losses) <= 11 if asynchronous else len(losses) == 11
    assert losses[-1] < 0.7 * losses[0], losses
    assert summary["test_accuracy"] > 0.5
    assert [r["epoch"] for r in records if r["event"] == "eval"] == ([0.0, 3.0] if asynchronous else
                                                                     [0.0, 1.0, 2.0, 3.0])


def _signalled_at(cls, step: int, rank: int):
    """``cls`` whose ``step()`` sends SIGTERM to rank ``rank`` right after step ``step``."""

    class Signalled(cls):
        def step(self, closure=None):
            loss = super().step(closure)
            if self.steps == step and self.comm.rank == rank:
                signal.raise_signal(signal.SIGTERM)
            return loss

    Signalled.__name__ = cls.__name__
    return Signalled


def _signalling(function, rank: int, call: int):
    """``function`` that sends SIGTERM to rank ``rank`` as its ``call``-th call there begins."""
    calls = []

    def signalling(*args, **kwargs):
        from mpi4py import MPI

        calls.append(1)
        if MPI.COMM_WORLD.Get_rank() == rank and len(calls) == call:
            signal.raise_signal(signal.SIGTERM)
        return function(*args, **kwargs)

    return signalling


def test_sigterm_on_one_rank_at_any_phase_then_resume_equals_an_uninterrupted_run(world, shared_dir, monkeypatch):
    settings = dict(FAST, algorithm="DmSGD", topology="ring", partition="dirichlet", alpha=0.3, weight_decay=1e-3,
                    options={"variant": "yu"}, checkpoint_every=4)
    with monkeypatch.context() as patch:  # a signal while rank 0 draws the plots: the run has finished
        patch.setattr(plots, "plot_curves", _signalling(plots.plot_curves, rank=0, call=1))
        whole = train(TrainConfig(**settings, out=f"{shared_dir}/whole"))
    assert whole["status"] == "finished" and whole["stopped_by"] is None

    dmsgd = algorithm.resolve("DmSGD")
    with monkeypatch.context() as patch:  # during training: at the next step boundary
        patch.setattr(algorithm, "resolve", lambda name: _signalled_at(dmsgd, step=14, rank=1))
        stopped = train(TrainConfig(**settings, out=f"{shared_dir}/parts"))
    assert stopped["status"] == "preempted" and stopped["steps"] == 14 and stopped["stopped_by"] == "SIGTERM"
    with monkeypatch.context() as patch:  # during the final evaluation (the 3rd scoring after step 14)
        patch.setattr(evaluation, "score", _signalling(evaluation.score, rank=2, call=3))
        stopped = train(TrainConfig(**settings, out=f"{shared_dir}/parts", resume=True))
    assert stopped["status"] == "preempted" and stopped["steps"] == 33 and stopped["test_accuracy"] != whole[
        "test_accuracy"]  # the evaluation at step 33 was cut short: the summary holds step 22's
    with monkeypatch.context() as patch:  # during start-up, on one rank: before the first step
        patch.setattr(datasets, "load", _signalling(datasets.load, rank=3, call=1))
        stopped = train(TrainConfig(**settings, out=f"{shared_dir}/parts", resume=True))
    assert stopped["status"] == "preempted" and stopped["steps"] == 33
    resumed = train(TrainConfig(**settings, out=f"{shared_dir}/parts", resume=True))
    assert resumed["status"] == "finished" and resumed["steps"] == whole["steps"] == 33

    final = {}
    for run in ("whole", "parts"):
        final[run] = torch.load(f"{shared_dir}/{run}/checkpoints/step-00000033/rank-{world.Get_rank():05d}.pt",
                                weights_only=False)
    for key, tensor in final["whole"]["model"].items():
        assert torch.equal(tensor, final["parts"]["model"][key]), key
    whole_state, parts_state = final["whole"]["optimizer"]["state"], final["parts"]["optimizer"]["state"]
    assert whole_state and whole_state.keys() == parts_state.keys()
    for index, state in whole_state.items():
        assert torch.equal(state["momentum_buffer"], parts_state[index]["momentum_buffer"]), index

    numbers = ("step", "epoch", "lr", "loss", "accuracy", "consensus_distance", "test_loss", "test_accuracy",
               "worker_test_accuracy")
    runs = [[{k: r[k] for k in numbers if k in r} for r in records_of(world, f"{shared_dir}/{run}")]
            for run in ("whole", "parts")]
    assert runs[0] == runs[1]
    for key in ("test_accuracy", "consensus_distance", "train_loss"):
        assert whole[key] == resumed[key]


def test_samples_per_s_is_the_slowest_ranks_pace(world, shared_dir, monkeypatch):
    """LocalSGD that never averages: the others wait for the slow rank at the records, outside
    step(); the job still goes at the slow rank's pace (a mean over ranks said ~4x faster)."""
    slow, step = world.Get_size() - 1, loop.Trainer.train_step

    def slowed(self, *args):
        if self.rank == slow:
            time.sleep(0.2)  # counted in its compute time: train_step's start is an argument
        step(self, *args)

    monkeypatch.setattr(loop.Trainer, "train_step", slowed)
    config = TrainConfig(**{**FAST, "epochs": 1}, algorithm="LocalSGD", options={"period": 100},
                         out=f"{shared_dir}/paced")
    summary = train(config)
    records = [r for r in records_of(world, config.out) if r["event"] == "train"]
    global_batch = world.Get_size() * FAST["batch_size"]
    assert len(records) == 4 and summary["status"] == "finished"
    for pace in [r["samples_per_s"] for r in records] + [summary["samples_per_s"]]:
        assert global_batch / pace >= 0.2, [r["samples_per_s"] for r in records]


ASYNC = dict(FAST, algorithm="ADPSGD", topology="ring", momentum=0.0, epochs=6, log_every=6)


def test_adpsgd_through_mpidec_train_does_not_wait_for_a_straggler(world, shared_dir, monkeypatch):
    slow = world.Get_size() - 1  # passive on the ring
    step = loop.Trainer.train_step

    def slowed(self, *args):
        if self.rank == slow:
            time.sleep(0.4)
        step(self, *args)

    monkeypatch.setattr(loop.Trainer, "train_step", slowed)
    summary = train(TrainConfig(**ASYNC, out=f"{shared_dir}/async"))
    steps = summary["steps_per_rank"]
    budget = 6 * 11 * 32 * world.Get_size()  # the samples of the synchronous run
    assert summary["status"] == "finished" and summary["samples"] == sum(steps) * 32 == budget
    assert steps[slow] < 0.6 * max(steps), steps  # the others did not wait for it
    assert summary["steps"] == 66 and summary["test_accuracy"] > 0.5
    records = records_of(world, f"{shared_dir}/async")
    for record in records:
        check_record(record)
    assert [r["step"] for r in records if r["event"] == "eval"] == [0, 66]
    assert all(r["consensus_distance"] is None for r in records if r["event"] == "train")
    assert summary["consensus_distance"] > 0  # measured at the end, over every model


def test_adpsgd_draws_the_next_ticket_before_a_step_computes(world, shared_dir, monkeypatch):
    """The sample counter's owner (rank 1, passive) serves it in its own progress, late
    while it is busy in MPI: each step's successor ticket is in flight while the step
    computes."""
    from mpidec.comm.mpi_window import MPICounter

    events, draw, step, made = [], MPICounter.iadd, loop.Trainer.train_step, MPICounter.__init__
    monkeypatch.setattr(MPICounter, "__init__", lambda self, comm, owner=0: events.append(owner) or made(self, comm, owner))
    monkeypatch.setattr(MPICounter, "iadd", lambda self, amount=1: events.append("draw") or draw(self, amount))
    monkeypatch.setattr(loop.Trainer, "train_step", lambda self, *args: events.append("step") or step(self, *args))
    summary = train(TrainConfig(**ASYNC, out=f"{shared_dir}/async"))
    steps = summary["steps_per_rank"][world.Get_rank()]
    assert summary["status"] == "finished" and steps > 0
    assert events == [1, "draw"] + ["draw", "step"] * steps  # on rank 1, passive; the last ticket is past the budget


def test_adpsgd_stops_everywhere_when_one_rank_is_signalled_and_resumes_to_the_sample_budget(world, shared_dir,
                                                                                                monkeypatch):
    adpsgd = algorithm.resolve("ADPSGD")
    with monkeypatch.context() as patch:
        patch.setattr(algorithm, "resolve", lambda name: _signalled_at(adpsgd, step=10, rank=2))
        stopped = train(TrainConfig(**ASYNC, out=f"{shared_dir}/async"))
    assert stopped["status"] == "preempted" and stopped["stopped_by"] == "SIGTERM"
    assert stopped["steps_per_rank"][2] == 10 and 0 < stopped["samples"] < 6 * 11 * 128
    resumed = train(TrainConfig(**ASYNC, out=f"{shared_dir}/async", resume=True))
    assert resumed["status"] == "finished" and resumed["samples"] == 6 * 11 * 32 * world.Get_size()
    assert all(a >= b for a, b in zip(resumed["steps_per_rank"], stopped["steps_per_rank"]))
