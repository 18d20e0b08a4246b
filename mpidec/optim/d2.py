"""D2: decentralized training over heterogeneous data (Tang et al. 2018)."""

from __future__ import annotations

import torch

from .base import DecentralizedOptimizer


class D2(DecentralizedOptimizer):
    r"""D^2 (variance-reduced gossip for heterogeneous data)::

        first step:  H = X - lr G
        then:        H = 2 X - X_prev - lr (G - G_prev)
        X+ = W H

    Converges to the exact minimiser of the average objective, where D-PSGD keeps a
    bias that grows with data heterogeneity. Needs the smallest eigenvalue of W above
    -1/3 (use ``topology.lazy`` weights on an even ring). No momentum. Sent per step:
    one model, ``H``, which depends on the final gradients: the exchange starts in ``step()``.
    State: previous iterate and previous gradient.
    """

    def __init__(self, params, lr, **kwargs):
        super().__init__(params, lr, **kwargs)
        self._h = {}  # scratch for H (not part of the state)

    def _check_group(self, group):
        super()._check_group(group)
        if group["momentum"] != 0.0:
            raise ValueError("D2 has no momentum form: use momentum=0")

    def _before(self, pairs):
        for p, group in pairs:
            g = self._gradient(p, group)
            x_prev, g_prev = self._buffer(p, "prev_param"), self._buffer(p, "prev_grad")
            h = self._h.setdefault(p, torch.empty_like(p))
            if self.steps == 0:
                torch.add(p, g, alpha=-group["lr"], out=h)
            else:
                torch.sub(p, x_prev, out=h).add_(p).sub_(g.sub(g_prev), alpha=group["lr"])
            x_prev.copy_(p)
            g_prev.copy_(g)
            p.copy_(h)                                                     # p = H, then W H
