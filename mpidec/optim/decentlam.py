"""DecentLaM: decentralized momentum SGD without the momentum-amplified bias (Yuan et al. 2021)."""

from __future__ import annotations

import torch

from ..topology import TopologyError, is_symmetric
from .base import DecentralizedOptimizer, by_group


class DecentLaM(DecentralizedOptimizer):
    r"""Decentralized large-batch momentum SGD::

        S    = X - lr G
        Ghat = (X - W S) / lr               (the gossip-corrected gradient)
        M    = beta M + Ghat
        X+   = X - lr M                     (Nesterov: X+ = X - lr (Ghat + beta M))

    equivalently ``X+ = W (X - lr G) + beta (X - X_prev)``. Its fixed point solves
    ``(I - W) X + lr W grad F(X) = 0`` whatever beta (DmSGD's grows like 1/(1 - beta)).
    Sent per step: one model, ``S``, which depends on the final gradients: the exchange
    starts in ``step()``. Memory: momentum plus one scratch model.
    W must be symmetric (the paper's assumption): the momentum acts on the gossip step too,
    and on a directed graph such as ``exponential`` the recursion ``W x + beta (x - x_prev)``
    has complex modes outside the unit circle and diverges. The default topology is
    ``symmetric_exponential``.
    In place: with ``WS`` the gossiped ``S``, ``X = WS + lr Ghat``, so
    ``X+ = WS + lr (Ghat - d)`` with ``d`` the momentum direction.
    """

    default_topology = "symmetric_exponential"
    divides_by_lr = True

    def __init__(self, params, lr, *, topology=None, **kwargs):
        if topology is not None and not all(is_symmetric(topology.at(t).W) for t in range(topology.period or 1)):
            raise TopologyError(f"DecentLaM needs a symmetric mixing matrix and {topology.name!r} is not: "
                                "its momentum diverges on directed graphs; use e.g. ring, torus, "
                                "symmetric_exponential or random_matching")
        super().__init__(params, lr, topology=topology, **kwargs)
        self._x = {}  # scratch: X before the step, then Ghat (not part of the state)

    def _before(self, pairs):
        for p, group in pairs:
            self._x.setdefault(p, torch.empty_like(p)).copy_(p)
            if p.grad is not None:
                p.add_(self._gradient(p, group), alpha=-group["lr"])      # p = S, then W S

    def _after(self, pairs):
        for group, params in by_group(pairs):
            lr = group["lr"]
            ghats = [self._x[p].sub_(p).div_(lr) for p in params]          # (X - W S) / lr
            if group["momentum"]:                                          # beta = 0: X+ = W S
                directions = self._momentum_directions(params, ghats, group)
                torch._foreach_sub_(ghats, directions)
                torch._foreach_add_(params, ghats, alpha=lr)

