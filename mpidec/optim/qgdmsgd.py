"""Quasi-global momentum for decentralized SGD (Lin et al. 2021)."""

from __future__ import annotations

import torch

from .base import DecentralizedOptimizer


class QGDmSGD(DecentralizedOptimizer):
    r"""QG-DmSGD: the local step uses a momentum built from the model's actual movement::

        D  = G + beta Mhat                  (Nesterov: D = G + beta (G + beta Mhat))
        X+ = W (X - lr D)
        Mhat = beta Mhat + (1 - beta) (X - X+) / lr

    ``(X - X+) / lr`` includes the neighbours' pull, so the momentum approximates the
    global direction and stays stable on heterogeneous data. Sent per step: one model, which
    depends on the final gradients: the exchange starts in ``step()``.
    """

    divides_by_lr = True

    def __init__(self, params, lr, **kwargs):
        super().__init__(params, lr, **kwargs)
        self._x = {}  # scratch: X before the step (not part of the state)

    def _before(self, pairs):
        for p, group in pairs:
            self._x.setdefault(p, torch.empty_like(p)).copy_(p)
            beta = group["momentum"]
            if p.grad is not None:
                g = self._gradient(p, group)
                d = g.add(self._buffer(p, "momentum_buffer"), alpha=beta) if beta else g
                if group["nesterov"]:
                    d = g.add(d, alpha=beta)
                p.add_(d, alpha=-group["lr"])

    def _after(self, pairs):
        for p, group in pairs:
            beta = group["momentum"]
            if beta:
                moved = self._x[p].sub_(p).div_(group["lr"])               # (X - X+) / lr
                self._buffer(p, "momentum_buffer").mul_(beta).add_(moved, alpha=1 - beta)
