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
    Communication starts once the local step is done, in ``step()``: what is sent depends
    on the final gradients, so it cannot start during backward without changing a number.
    Its fixed point on exact gradients solves ``(I - W) X + lr / (1 - beta) W grad F(X) = 0``:
    momentum amplifies the bias.
    """

    options = {"variant": "atc"}

    def _check_group(self, group):
        super()._check_group(group)
        if group["variant"] not in ("atc", "yu"):
            raise ValueError(f"unknown variant {group['variant']!r}; use 'atc' or 'yu'")
        if group["variant"] == "yu" and group["nesterov"]:
            raise ValueError("variant='yu' has no Nesterov form; use variant='atc'")

    def _before(self, pairs):
        self._local_sgd_step(pairs)

    def _to_send(self, pairs):
        params = [p for p, _ in pairs]
        yu = [p for p, group in pairs if group["variant"] == "yu" and group["momentum"] > 0]
        if not yu:
            return self._layout.slices(params)
        if len(yu) == len(params):                 # model and momentum: each its flat slice, in place
            return self._layout.slices(params) + self._field(params, "momentum_buffer")
        return params + [self._buffer(p, "momentum_buffer") for p in yu]


class DSGD(DmSGD):
    r"""D-PSGD (Lian et al. 2017), adapt-then-combine::

        X+ = W (X - lr G)

    The same class as :class:`DmSGD` with ``momentum=0`` by default.
    """
