"""Quasi-global momentum for decentralized SGD (Lin et al. 2021)."""

from __future__ import annotations

import torch

from .base import DecentralizedOptimizer
from .buckets import by_group


class QGDmSGD(DecentralizedOptimizer):
    r"""QG-DmSGD: the local step uses a momentum built from the model's actual movement::

        D  = G + beta Mhat                  (Nesterov: D = G + beta (G + beta Mhat))
        X+ = W (X - lr D)
        Mhat = beta Mhat + (1 - beta) (X - X+) / lr

    ``(X - X+) / lr`` includes the neighbours' pull, so the momentum approximates the
    global direction and stays stable on heterogeneous data. Sent per step: one model, which
    depends on the final gradients: the exchange starts in ``step()``. On flat slices, per
    step: a copy of ``X`` (2 passes over model-sized memory), the local step (6: ``- lr g``
    and ``- lr beta Mhat``), ``X - X+`` (3) and the momentum update (5), besides the exchange.
    """

    divides_by_lr = True

    def _before(self, pairs):
        params = [p for p, _ in pairs]
        torch._foreach_copy_(self._layout.slices(params, "scratch"), self._layout.slices(params))  # X (not state)
        for group, with_grad in by_group(pairs, with_grad=True):
            lr, beta = group["lr"], group["momentum"]
            grads = [p.grad for p in with_grad]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, with_grad, alpha=group["weight_decay"])
            nesterov = group["nesterov"]
            torch._foreach_add_(with_grad, grads, alpha=-lr * (1 + beta if nesterov else 1))
            if beta:                                                       # D = G + beta Mhat (Nesterov:
                momenta = [self._buffer(p, "momentum_buffer") for p in with_grad]  # (1 + beta) G + beta^2 Mhat)
                torch._foreach_add_(with_grad, momenta, alpha=-lr * beta * (beta if nesterov else 1))

    def _after(self, pairs):
        for group, params in by_group(pairs):
            beta = group["momentum"]
            if beta:
                moved = self._layout.slices(params, "scratch")
                torch._foreach_sub_(moved, self._layout.slices(params))      # X - X+
                momenta = self._field(params, "momentum_buffer")
                torch._foreach_mul_(momenta, beta)
                torch._foreach_add_(momenta, moved, alpha=(1 - beta) / group["lr"])
