"""AD-PSGD workers shared by the simulator tests and the MPI tests (one node's loop each)."""

import time

import numpy as np
import torch

from mpidec.optim import ADPSGD
from oracles import LeastSquares, node_tensors

F64_SPECS = [((3, 4), torch.float64), ((5,), torch.float64), ((2, 1, 3), torch.float64)]


def flat(tensors) -> np.ndarray:
    return torch.cat([t.detach().reshape(-1) for t in tensors]).numpy().copy()


def initial_models(n, seed=0) -> np.ndarray:
    """Row i: node i's random float64 model (what :func:`zero_gradient_worker` starts from)."""
    return np.stack([flat(m) for m in node_tensors(n, seed, F64_SPECS)])


def zero_gradient_worker(comm, averages, seed=0):
    """Zero gradients: only the pairwise averages change the models. The active nodes make
    ``averages`` averages together (a shared counter); the passive ones keep stepping (and
    locking their models) until then, so nobody stops early. Returns (model, steps)."""
    params = [t.requires_grad_() for t in node_tensors(comm.size, seed, F64_SPECS)[comm.rank]]
    opt = ADPSGD(params, lr=0.1, comm=comm)
    counter = comm.counter()
    while counter.add(1 if opt.active else 0) < averages:
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    opt.finish(average=False)  # loads the final model into params
    counter.free()
    return flat(params), opt.steps


def interpolating_problem(n, seed=0) -> LeastSquares:
    """Least squares whose nodes share the minimiser but none can find it alone: node i has
    4 equations for 6 unknowns (``b_i = A_i x*``); the average objective is strongly convex."""
    problem = LeastSquares(n, dim=6, rows=4, seed=seed)
    problem.x_star = np.random.default_rng(seed + 1).standard_normal(6) * 3
    problem.b = np.einsum("nrd,d->nr", problem.A, problem.x_star)
    return problem


def training_worker(comm, problem, total_steps, lr, momentum=0.0, slow_rank=None, delay=0.0, min_steps=0):
    """Train until all nodes together made ``total_steps`` steps (a shared counter) and this
    node made ``min_steps`` (the scheduler can starve a rank of steps: 13 of 200 on a loaded
    machine); node ``slow_rank`` sleeps ``delay`` seconds per step. Returns (model, this
    node's steps)."""
    i = comm.rank
    x = torch.tensor(problem.x0[i]).requires_grad_()
    A, b = torch.tensor(problem.A[i]), torch.tensor(problem.b[i])
    opt = ADPSGD([x], lr=lr, momentum=momentum, comm=comm)
    counter = comm.counter()
    while counter.add(1) < total_steps or opt.steps < min_steps:
        if i == slow_rank:
            time.sleep(delay)
        opt.zero_grad()
        (0.5 * ((A @ x - b) ** 2).sum()).backward()
        opt.step()
    opt.finish(average=False)
    counter.free()
    return x.detach().numpy().copy(), opt.steps


def gather(comm, value) -> np.ndarray:
    """Every rank's ``value``, stacked in rank order (collective)."""
    return np.stack(comm.allgather_object(value))
