"""Gradient tracking: decentralized SGD that converges to the exact optimum on heterogeneous data."""

from __future__ import annotations

import torch

from .base import DecentralizedOptimizer
from .buckets import by_group


class GT(DecentralizedOptimizer):
    r"""Gradient tracking (DIGing, Nedic et al. 2017; GT-DSGD / DSGT, Pu & Nedic 2021),
    with local heavy-ball or Nesterov momentum on the tracked direction::

        Y  = W Y_prev + G - G_prev          (Y = G on the first step: the tracker)
        M  = beta M + Y
        X+ = W (X - lr M)                   (Nesterov: X+ = W (X - lr (Y + beta M)))

    ``Y`` tracks the average gradient: with a doubly stochastic W, ``mean(Y) = mean(G)``
    at every step, so at a fixed point (consensus, ``Y = W Y``) the average gradient is
    zero. On exact gradients it reaches the exact minimiser of the average objective on
    any connected graph, for a small enough lr (D-PSGD keeps a bias that grows with data
    heterogeneity; D2 needs the smallest eigenvalue of W above -1/3).

    Sent per step: the model ``X - lr M`` and the tracker ``Y``, fused in one exchange (one
    buffer per dtype, one message per neighbour); both depend on the final gradients, so
    the exchange starts in ``step()``. State: tracker (holding ``W Y`` between steps),
    previous gradient, momentum: three models. A parameter without a gradient counts as a
    zero gradient (the tracker must keep mixing).
    """

    def _before(self, pairs):
        for group, params in by_group(pairs):
            grads = [self._gradient(p, group) for p in params]
            trackers = [self._buffer(p, "tracker") for p in params]
            previous = [self._buffer(p, "prev_grad") for p in params]
            torch._foreach_add_(trackers, grads)                       # W Y_prev + G - G_prev
            torch._foreach_sub_(trackers, previous)
            torch._foreach_copy_(previous, grads)
            torch._foreach_add_(params, self._momentum_directions(params, trackers, group), alpha=-group["lr"])

    def _to_send(self, pairs):
        params = [p for p, _ in pairs]
        return self._layout.slices(params) + self._field(params, "tracker")  # each in place
