"""DecentLaM: decentralized momentum SGD without the momentum-amplified bias (Yuan et al. 2021)."""

from __future__ import annotations

import torch

from ..topology import TopologyError, is_symmetric
from .base import DecentralizedOptimizer
from .buckets import by_group


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
    In place, on flat slices: with ``WS`` the gossiped ``S``, ``X = WS + lr Ghat``, so
    ``X+ = WS + lr (Ghat - d) = WS - lr beta M`` (``M`` before the update for heavy ball,
    after it for Nesterov): per step a copy of ``X`` (2 passes over model-sized memory), the
    local step (3), ``X - WS`` (3), ``X+`` (3) and the momentum update (5), besides the
    exchange.
    """

    default_topology = "symmetric_exponential"
    divides_by_lr = True

    def __init__(self, params, lr, *, topology=None, **kwargs):
        if topology is not None and not all(is_symmetric(topology.at(t).W) for t in range(topology.period or 1)):
            raise TopologyError(f"DecentLaM needs a symmetric mixing matrix and {topology.name!r} is not: "
                                "its momentum diverges on directed graphs; use e.g. ring, torus, "
                                "symmetric_exponential or random_matching")
        super().__init__(params, lr, topology=topology, **kwargs)

    def _before(self, pairs):
        params = [p for p, _ in pairs]
        torch._foreach_copy_(self._layout.slices(params, "scratch"), self._layout.slices(params))  # X (not state)
        self._local_sgd_step(pairs, momentum=False)                        # p = S, then W S

    def _after(self, pairs):
        for group, params in by_group(pairs):
            lr, beta = group["lr"], group["momentum"]
            if not beta:                                                   # X+ = W S
                continue
            x, moved = self._layout.slices(params), self._layout.slices(params, "scratch")
            torch._foreach_sub_(moved, x)                                  # X - W S = lr Ghat
            momenta = self._field(params, "momentum_buffer")
            if not group["nesterov"]:
                torch._foreach_add_(x, momenta, alpha=-lr * beta)          # X+ = W S - lr beta M
            torch._foreach_mul_(momenta, beta)
            torch._foreach_add_(momenta, moved, alpha=1 / lr)              # M = beta M + Ghat
            if group["nesterov"]:
                torch._foreach_add_(x, momenta, alpha=-lr * beta)

