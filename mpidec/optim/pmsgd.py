"""Centralized parallel momentum SGD: the allreduce baseline."""

from __future__ import annotations

from .base import DecentralizedOptimizer


class PmSGD(DecentralizedOptimizer):
    r"""Parallel momentum SGD (Horovod allreduce; MPI allreduce when Horovod is absent)::

        G_bar = mean over workers of G
        M = beta M + G_bar ;  X+ = X - lr M            (Nesterov: X+ = X - lr (G_bar + beta M))

    The gradients of all parameters travel in one fused allreduce; a parameter with no
    gradient on a rank contributes zeros, so every rank sends the same layout.
    """

    gossips = False

    def _before(self, pairs):
        for p, _ in pairs:
            if p.grad is None:
                p.grad = p.new_zeros(p.shape)

    def _exchanged(self, pairs):
        return [p.grad for p, _ in pairs]

    def _after(self, pairs):
        self._local_sgd_step(pairs)
