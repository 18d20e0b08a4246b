"""Torch training habits around ``step()``, run on any communicator, and their dense oracle.

A worker trains the heterogeneous least-squares problem of :mod:`oracles` with one habit
(GradScaler, clipping, accumulation, a learning-rate change, a closure, ...) and records,
at every step, the gradient *as it is when step() is called* (unscaled by the test where
the scaler leaves the unscaling to the optimizer), the step's lr and momentum, and whether
the step was skipped. :func:`replay` applies the algorithm's update rule in matrix form to
those gradients: the optimizer must give exactly these numbers.
"""

import numpy as np
import torch

from mpidec import optim
from mpidec.comm import Simulator
from oracles import ALGORITHM_CASES, DenseRule, LeastSquares

HABITS = ["plain", "scaler", "scaler_unscale_clip", "scaler_inf", "clip_norm", "clip_value", "accumulate",
          "hyper_change", "closure"]
LR, STEPS, SEED, INF_STEP = 0.05, 12, 7, 3
SIMULATED = 4  # workers of the simulator runs
CASES = ALGORITHM_CASES + [("SignumMV", {"momentum": 0.8}), ("GT", {"momentum": 0.8}), ("SGP", {"momentum": 0.8}),
                           ("OSGP", {"momentum": 0.8, "delay": 2})]


def topology_for(algorithm, n):
    """A time-varying graph, symmetric for DecentLaM, directed column-stochastic for SGP and OSGP."""
    from mpidec import topology as T

    push = lambda n: T.random_push(n, seed=3)  # noqa: E731
    return {"DecentLaM": T.ring, "SGP": push, "OSGP": push}.get(
        algorithm, lambda n: T.random_matching(n, seed=3))(n)


def problem_for(n):
    return LeastSquares(n, seed=SEED)


def habit_worker(comm, algorithm, habit, topology, momentum=0.0, **options):
    """Train with ``habit``; returns (models after each step, [(G, lr, beta, skipped)] per step)."""
    problem = problem_for(comm.size)
    x0 = torch.tensor(problem.x0[comm.rank])
    params = [x0[:4].clone().requires_grad_(), x0[4:].clone().requires_grad_()]
    A, b = torch.tensor(problem.A[comm.rank]), torch.tensor(problem.b[comm.rank])
    opt = optim.by_name(algorithm)(params, lr=LR, momentum=momentum, topology=topology, comm=comm, **options)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if habit.startswith("scaler") else None

    def loss(rows=slice(None)):
        return 0.5 * ((A[rows] @ torch.cat(params) - b[rows]) ** 2).sum()

    def grads(scale=1.0):
        return torch.cat([p.grad for p in params]).detach().numpy() * scale

    trajectory, records = [], []
    for t in range(STEPS):
        lr, beta = LR, momentum
        opt.zero_grad(set_to_none=True)
        if habit == "closure":
            def closure():
                opt.zero_grad(set_to_none=True)
                value = loss()
                value.backward()
                return value

            with torch.no_grad():
                expected = loss().item()
            assert opt.step(closure).item() == expected  # step(closure) returns the closure's loss
            records.append((grads(), lr, beta, False))
            trajectory.append(torch.cat(params).detach().numpy().copy())
            continue
        overflow = habit == "scaler_inf" and t == INF_STEP  # on one rank, in backward: as real overflows are
        if habit == "accumulate":
            for rows in (slice(0, 4), slice(4, 7), slice(7, None)):
                loss(rows).backward()
        elif scaler is not None:
            value = loss()
            if overflow and comm.rank == comm.size - 1:
                value = value + params[0][1] * float("inf")
            scaler.scale(value).backward()
        else:
            loss().backward()
        if habit in ("clip_norm", "scaler_unscale_clip"):
            if scaler is not None:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, max_norm=0.1)
        elif habit == "clip_value":
            torch.nn.utils.clip_grad_value_(params, 0.05)
        elif habit == "hyper_change":
            lr, beta = LR * (1 + 0.5 * (t % 3)), momentum * (0.5 if t >= STEPS // 2 else 1.0)
            for group in opt.param_groups:
                group["lr"], group["momentum"] = lr, beta
        skipped = overflow
        if scaler is not None:
            scale = 1.0 if habit == "scaler_unscale_clip" else 1.0 / scaler.get_scale()
            records.append((grads(scale), lr, beta, skipped))
            before = _snapshot(params, opt)
            scaler.step(opt)
            scaler.update()
            if skipped:
                _assert_unchanged(before, _snapshot(params, opt))
        else:
            records.append((grads(), lr, beta, skipped))
            opt.step()
        trajectory.append(torch.cat(params).detach().numpy().copy())
    return np.stack(trajectory), records


def _snapshot(params, opt):
    state = opt.state_dict()
    tensors = [v.clone() for s in state["state"].values() for v in s.values() if torch.is_tensor(v)]
    return [p.detach().clone() for p in params], tensors, state["steps"]


def _assert_unchanged(before, after):
    for a, b in zip(before[0] + before[1], after[0] + after[1]):
        assert torch.equal(a, b), "a step skipped for a non-finite gradient changed the model or the state"
    assert len(before[1]) == len(after[1]) and before[2] == after[2]


def replay(algorithm, topology, records, momentum=0.0, **options):
    """The models after each step by the dense rule on every rank's recorded gradients:
    (nodes, steps, dim). ``records[r]`` is rank r's list from :func:`habit_worker`."""
    problem = problem_for(len(records))
    rule = DenseRule(algorithm, problem.n, problem.dim, momentum, **options)
    X, out = problem.x0.copy(), []
    for t in range(len(records[0])):
        G = np.stack([r[t][0] for r in records])
        _, lr, beta, skipped = records[0][t]
        if not skipped:
            X = rule.step(X, G, topology.at(rule.t).W, lr, beta)
        out.append(X)
    return np.stack(out, axis=1)



def check_habit(comm_or_none, algorithm, kwargs, habit, topology):
    """Run the habit (on the simulator when ``comm_or_none`` is None, else on that communicator's
    ranks) and compare every rank's models with the dense replay of the recorded gradients."""
    if comm_or_none is None:
        results = Simulator(SIMULATED).run(habit_worker, algorithm, habit, topology, **kwargs)
        records = [r for _, r in results]
        mine = {rank: traj for rank, (traj, _) in enumerate(results)}
    else:
        traj, rec = habit_worker(comm_or_none, algorithm, habit, topology, **kwargs)
        records = comm_or_none.allgather_object(rec)
        mine = {comm_or_none.rank: traj}
    want = replay(algorithm, topology, records, **kwargs)
    for rank, traj in mine.items():
        np.testing.assert_allclose(traj, want[rank], rtol=1e-10, atol=1e-10, err_msg=f"rank {rank}")
    moved = np.abs(want[:, -1] - want[:, 0]).max()
    assert moved > 1e-3, "the run did not move"
