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

    def _update(self):
        params = self.params
        for p in params:
            if p.grad is None:
                p.grad = p.new_zeros(p.shape)
        self.comm.allreduce([p.grad for p in params])
        self._local_sgd_step()
