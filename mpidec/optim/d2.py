"""D2: decentralized training over heterogeneous data (Tang et al. 2018)."""

from __future__ import annotations

import torch

from .base import DecentralizedOptimizer, by_group


class D2(DecentralizedOptimizer):
    r"""D^2 (variance-reduced gossip for heterogeneous data)::

        first step:  H = X - lr G
        then:        H = 2 X - X_prev - lr (G - G_prev)
        X+ = W H

    Converges to the exact minimiser of the average objective, where D-PSGD keeps a
    bias that grows with data heterogeneity. Needs the smallest eigenvalue of W above
    -1/3 (use ``topology.lazy`` weights on an even ring). No momentum. Sent per step:
    one model, ``H``, which depends on the final gradients: the exchange starts in ``step()``.
    State: previous iterate and previous gradient. In place, on flat slices: ``X - X_prev``
    into a scratch field (5 passes over model-sized memory), ``X_prev <- X`` (2), ``X += X -
    X_prev`` (3), ``+ lr G_prev - lr G`` (6) and ``G_prev <- G`` (2), besides the exchange.
    """

    def _check_group(self, group):
        super()._check_group(group)
        if group["momentum"] != 0.0:
            raise ValueError("D2 has no momentum form: use momentum=0")

    def _before(self, pairs):
        for group, params in by_group(pairs):
            lr = group["lr"]
            grads = [self._gradient(p, group) for p in params]
            x, x_prev = self._layout.slices(params), self._field(params, "prev_param")
            previous = [self._buffer(p, "prev_grad") for p in params]
            if self.steps > 0:
                moved = self._layout.slices(params, "scratch")
                torch._foreach_copy_(moved, x)
                torch._foreach_sub_(moved, x_prev)                         # X - X_prev
            torch._foreach_copy_(x_prev, x)
            if self.steps > 0:
                torch._foreach_add_(x, moved)                              # 2 X - X_prev
                torch._foreach_add_(params, previous, alpha=lr)            # + lr G_prev
            torch._foreach_add_(params, grads, alpha=-lr)                  # p = H, then W H
            torch._foreach_copy_(previous, grads)
