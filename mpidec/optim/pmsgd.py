"""Centralized parallel momentum SGD: the allreduce baseline."""

from __future__ import annotations

import torch

from .base import DecentralizedOptimizer
from .buckets import BackwardOverlap


class PmSGD(DecentralizedOptimizer):
    r"""Parallel momentum SGD (Horovod allreduce; MPI allreduce when Horovod is absent)::

        G_bar = mean over workers of G
        M = beta M + G_bar ;  X+ = X - lr M            (Nesterov: X+ = X - lr (G_bar + beta M))

    As in DDP, the gradients are averaged *by backward* when ``overlap=True`` (the default):
    buckets of gradients are allreduced from gradient hooks while backward goes on, and
    ``backward()`` returns with ``p.grad`` holding ``G_bar``. What the user then does to the
    gradients (GradScaler's unscaling, clipping by the *global* norm, ...) acts on the
    average, and ``step()`` applies the momentum step to the gradients as they are then.
    Gradient accumulation: every backward averages what has accumulated so far (the mean is
    linear, so k backward passes give the mean of the sum, to rounding, at k allreduces);
    inside ``with opt.no_sync():`` backward only accumulates, and the next backward outside
    it averages the sum (one allreduce). With ``overlap=False`` (or gradients set by hand
    rather than by backward) ``step()`` averages first.

    The gradients of a bucket travel in one fused allreduce, with one number per parameter
    that counts the ranks that have its gradient: a rank without a gradient contributes
    zeros, and a parameter no rank has a gradient for keeps ``grad = None`` (it takes no
    step, as in ``torch.optim.SGD`` and DDP).
    """

    exchange = "allreduce"
    estimates_consensus = False

    def __init__(self, params, lr, **kwargs):
        super().__init__(params, lr, **kwargs)
        self._averaged = False  # p.grad holds the average of the last backward
        self._hooks = BackwardOverlap(self._buckets, self._launch, self._finish_average) if self.overlap else None

    def no_sync(self):
        """Context manager: backward passes inside it accumulate gradients without averaging."""
        if self._hooks is None:
            raise RuntimeError("no_sync() needs overlap=True: with overlap=False step() averages anyway")
        return self._hooks.paused()

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        self._averaged = False

    def _to_send(self, pairs):
        """The gradients (zeros where missing) and, last, which of them this rank has."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p, _ in pairs]
        first = pairs[0][0]
        has = torch.tensor([p.grad is not None for p, _ in pairs], dtype=first.dtype, device=first.device)
        return grads + [has]

    def _finish_average(self) -> None:
        """Wait for every bucket's allreduce; give each parameter that some rank has a gradient
        for the average (``None`` stays where no rank has one)."""
        for bucket in self._buckets:
            bucket.handle.wait()
            bucket.handle = None
            *grads, has = bucket.tensors
            for (p, _), g, share in zip(bucket.pairs, grads, has.tolist()):
                if p.grad is None and share > 0:
                    p.grad = g
        self._averaged = True

    def _iterate(self):
        if not self._averaged:
            for bucket in self._buckets:
                self._launch(bucket)
            self._finish_average()
        self._averaged = False
        for bucket in self._buckets:
            self._local_sgd_step(bucket.pairs)
