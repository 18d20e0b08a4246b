"""D2: decentralized training over heterogeneous data (Tang et al. 2018)."""

from __future__ import annotations

import torch

from .base import DecentralizedOptimizer
from .buckets import by_group


class D2(DecentralizedOptimizer):
    r"""D^2 (variance-reduced gossip for heterogeneous data)::

        first step:  H = X - lr G
        then:        H = 2 X - X_prev - lr (G - G_prev)
        X+ = W H

    Converges to the exact minimiser of the average objective, where D-PSGD keeps a
    bias that grows with data heterogeneity. Needs the smallest eigenvalue of W above
    -1/3 (use ``topology.lazy`` weights on an even ring). No momentum. Sent per step:
    one model, ``H``, which depends on the final gradients: the exchange starts in ``step()``.
    State: previous iterate and previous gradient. In place, on flat slices:
    ``2 X - X_prev = lerp(X_prev, X, 2)`` into a scratch field (3 passes over model-sized
    memory), ``X_prev <- X`` (2), ``X <- scratch + lr G_prev`` (3), ``- lr G`` (3) and
    ``G_prev <- G`` (2), besides the exchange (the first step: ``X_prev <- X``, ``- lr G``
    and ``G_prev <- G``).
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
            previous = self._field(params, "prev_grad")                  # G_prev: flat slices
            if self.steps > 0:
                twice = self._layout.slices(params, "scratch")
                for out, a, b in zip(twice, x_prev, x):
                    torch.lerp(a, b, 2.0, out=out)                         # 2 X - X_prev
            torch._foreach_copy_(x_prev, x)
            if self.steps > 0:
                for out, a, b in zip(x, twice, previous):
                    torch.add(a, b, alpha=lr, out=out)                     # + lr G_prev
            torch._foreach_add_(params, grads, alpha=-lr)                  # p = H, then W H
            torch._foreach_copy_([self.state[p]["prev_grad"] for p in params], grads)
