"""Consensus distance between workers (Kong et al. 2021): measure, estimate, control.

- Exact (one model-sized allreduce; for evaluation and tests)::

      Xi = sqrt( (1/n) sum_i ||x_i - xbar||^2 )

- Cheap estimate, from the neighbour exchange the optimizer already does (its
  ``consensus_estimate()``; one scalar allreduce, no extra model exchange)::

      Xi_hat = sqrt( (1/n) sum_i ||x_i - sum_j W_ij x_j||^2 )

  For a symmetric W with eigenvalues 1 = l_1 >= l_2 >= ... >= l_min on the models,
  ``(1 - l_2) Xi <= Xi_hat <= (1 - l_min) Xi``.

- Control: after the local step, gossip again until ``Xi_hat <= target``, where the
  target is a factor times a reference distance or a factor times an EMA of the global
  gradient norm, optionally only in chosen training phases (the paper's guideline:
  control the first learning-rate phase, relax later). Pass a :class:`ConsensusControl`
  as ``consensus_control=`` to any synchronous decentralized optimizer.
"""

from __future__ import annotations

import math

import torch


def exact_distance(tensors, comm=None) -> float:
    """``Xi`` over the given tensors, on every rank (collective: one allreduce of a copy).
    ``comm``: default the MPI communicator over the world, as for the optimizers."""
    if comm is None:
        from .comm import MPICommunicator

        comm = MPICommunicator()
    tensors = [t.detach() for t in tensors]
    mean = [t.clone() for t in tensors]
    comm.allreduce(mean)
    local = sum(float(torch.sum((t.double() - m.double()) ** 2)) for t, m in zip(tensors, mean))
    return math.sqrt(max(comm.allreduce_scalar(local, "mean"), 0.0))


def estimate_from_residual(local_residual_sq: float, comm) -> float:
    """``Xi_hat`` from this rank's ``||x_i - sum_j W_ij x_j||^2`` (collective: a scalar allreduce)."""
    return math.sqrt(max(comm.allreduce_scalar(local_residual_sq, "mean"), 0.0))


class ConsensusControl:
    """Gossip rounds until the consensus estimate is at most a target.

    ``reference``: target = ``factor * reference``, a distance or a function of the step
    (e.g. the distances an uncontrolled run measured); without it, target = ``factor * lr * EMA(g_rms)`` with
    ``g_rms = sqrt((1/n) sum_i ||g_i||^2)`` over the workers' gradients (one scalar
    allreduce) and EMA weight ``decay``: a local step moves a model by about lr g_rms.
    ``active(step)``: whether to control at this step (default: always); when it is not,
    one gossip round is done as usual.
    ``max_rounds`` bounds the rounds of one step.
    """

    def __init__(self, factor: float, reference=None, decay: float = 0.9,
                 active=None, max_rounds: int = 50):
        if factor < 0 or (isinstance(reference, (int, float)) and reference < 0):
            raise ValueError("factor and reference must be >= 0")
        if max_rounds < 1:
            raise ValueError("max_rounds must be >= 1")
        self.factor, self.reference, self.decay = factor, reference, decay
        self.active = active or (lambda step: True)
        self.max_rounds = max_rounds
        self._grad_ema = None

    def target(self, step: int, lr: float, grad_rms) -> float:
        """This step's target. ``grad_rms()``: ``sqrt((1/n) sum_i ||g_i||^2)`` over the workers
        (collective; called only when the target follows the gradient norm)."""
        if callable(self.reference):
            return self.factor * self.reference(step)
        if self.reference is not None:
            return self.factor * self.reference
        norm = grad_rms()
        self._grad_ema = norm if self._grad_ema is None else self.decay * self._grad_ema + (1 - self.decay) * norm
        return self.factor * lr * self._grad_ema

    def state_dict(self) -> dict:
        return {"grad_ema": self._grad_ema}

    def load_state_dict(self, state: dict) -> None:
        self._grad_ema = state["grad_ema"]
