"""D-PSGD and decentralized momentum SGD (adapt-then-combine)."""

from __future__ import annotations

from .base import DecentralizedOptimizer


class DmSGD(DecentralizedOptimizer):
    r"""Decentralized momentum SGD.

    ``variant="atc"`` (default; local momentum, gossip the model after the local step)::

        M  = beta M + G
        X+ = W (X - lr M)                   (Nesterov: X+ = W (X - lr (G + beta M)))

    ``variant="yu"`` (Yu, Jin & Yang 2019, Alg. 2; gossip the momentum too)::

        Y  = beta M + G
        M+ = W Y
        X+ = W (X - lr Y)

    ``G`` stacks the local stochastic gradients (plus ``weight_decay * X``) and rows are
    workers. Sent per step: one model (atc) or model and momentum in one fused buffer (yu).
    Communication starts once the local step is done; its fixed point on exact gradients
    solves ``(I - W) X + lr / (1 - beta) W grad F(X) = 0``: momentum amplifies the bias.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, topology=None,
                 comm=None, variant="atc", **options):
        if variant not in ("atc", "yu"):
            raise ValueError(f"unknown DmSGD variant {variant!r}; use 'atc' or 'yu'")
        if variant == "yu" and nesterov:
            raise ValueError("variant='yu' has no Nesterov form; use variant='atc'")
        super().__init__(params, lr, momentum, weight_decay, nesterov, topology, comm, variant=variant, **options)

    def _before(self, pairs):
        self._local_sgd_step(pairs)

    def _exchanged(self, pairs):
        params = [p for p, _ in pairs]
        if self.defaults["variant"] == "yu" and self.defaults["momentum"] > 0:
            return params + [self._buffer(p, "momentum_buffer") for p in params]
        return params


class DSGD(DmSGD):
    r"""D-PSGD (Lian et al. 2017), adapt-then-combine::

        X+ = W (X - lr G)

    ``momentum > 0`` makes it :class:`DmSGD` with ``variant="atc"``.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, topology=None, comm=None,
                 **options):
        super().__init__(params, lr, momentum, weight_decay, nesterov, topology, comm, variant="atc", **options)
