"""DecentLaM: decentralized momentum SGD without the momentum-amplified bias (Yuan et al. 2021)."""

from __future__ import annotations

import torch

from ..topology import TopologyError, is_symmetric
from .base import DecentralizedOptimizer


class DecentLaM(DecentralizedOptimizer):
    r"""Decentralized large-batch momentum SGD::

        S    = X - lr G
        Ghat = (X - W S) / lr               (the gossip-corrected gradient)
        M    = beta M + Ghat
        X+   = X - lr M                     (Nesterov: X+ = X - lr (Ghat + beta M))

    equivalently ``X+ = W (X - lr G) + beta (X - X_prev)``. Its fixed point solves
    ``(I - W) X + lr W grad F(X) = 0`` whatever beta (DmSGD's grows like 1/(1 - beta)).
    Sent per step: one model. Memory: momentum plus one scratch model.
    W must be symmetric (the paper's assumption): the momentum acts on the gossip step too,
    and on a directed graph such as ``exponential`` the recursion ``W x + beta (x - x_prev)``
    has complex modes outside the unit circle and diverges. The default topology is
    ``symmetric_exponential``.
    In place: with ``WS`` the gossiped ``S``, ``X = WS + lr Ghat``, so
    ``X+ = WS + lr (Ghat - d)`` with ``d`` the momentum direction.
    """

    default_topology = "symmetric_exponential"

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, topology=None, comm=None, **options):
        if lr == 0:
            raise ValueError("DecentLaM divides by lr: it must be > 0")
        if topology is not None and not all(is_symmetric(topology.at(t).W) for t in range(topology.period or 1)):
            raise TopologyError(f"DecentLaM needs a symmetric mixing matrix and {topology.name!r} is not: "
                                "its momentum diverges on directed graphs; use e.g. ring, torus, "
                                "symmetric_exponential or random_matching")
        super().__init__(params, lr, momentum, weight_decay, nesterov, topology, comm, **options)
        self._x = {}  # scratch: X before the step, then Ghat (not part of the state)

    def _before(self, pairs):
        for p, group in pairs:
            self._x.setdefault(p, torch.empty_like(p)).copy_(p)
            if p.grad is not None:
                p.add_(self._gradient(p, group), alpha=-group["lr"])      # p = S, then W S

    def _after(self, pairs):
        for p, group in pairs:
            ghat = self._x[p].sub_(p).div_(group["lr"])                    # (X - W S) / lr
            d = self._momentum_direction(p, ghat, group)
            if d is not ghat:                                              # beta = 0: X+ = W S
                p.add_(ghat.sub_(d), alpha=group["lr"])
