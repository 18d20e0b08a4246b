"""Local SGD with periodic model averaging: PR-SGD with momentum (Yu, Jin & Yang 2019)."""

from __future__ import annotations

from .base import DecentralizedOptimizer

MOMENTUM_SYNC = ("average", "clear", "local")


class LocalSGD(DecentralizedOptimizer):
    r"""Local heavy-ball (or Nesterov) steps, global averaging every ``period`` steps::

        M = beta M + G ;  X = X - lr M                 (every step, no communication)
        after steps period, 2 period, ...:   X = mean(X)   and, by ``momentum_sync``:
            "average" (default; Yu, Jin & Yang 2019):  M = mean(M)   (2 models, allreduce)
            "clear"   (restart the momentum):          M = 0         (1 model)
            "local"   (Lin et al. 2020's local SGD):   M unchanged   (1 model)

    With ``period=1`` and equal initial models, "average" is centralized heavy ball
    (PmSGD). ``period`` and ``momentum_sync`` are read from each parameter group at every
    step. What is averaged depends on the final gradients: the exchange starts in ``step()``.
    """

    exchange = "allreduce"
    estimates_consensus = False
    options = {"period": 1, "momentum_sync": "average"}

    def _check_group(self, group):
        super()._check_group(group)
        period = group["period"]
        if not (isinstance(period, int) and not isinstance(period, bool) and period >= 1):
            raise ValueError(f"invalid period {period!r}: must be an integer >= 1")
        if group["momentum_sync"] not in MOMENTUM_SYNC:
            raise ValueError(f"invalid momentum_sync {group['momentum_sync']!r}: use one of {', '.join(MOMENTUM_SYNC)}")

    def _averages_now(self, group) -> bool:
        return (self.steps + 1) % group["period"] == 0

    def _before(self, pairs):
        self._local_sgd_step(pairs)
        for p, group in pairs:
            if group["momentum"] and group["momentum_sync"] == "clear" and self._averages_now(group):
                self._buffer(p, "momentum_buffer").zero_()

    def _to_send(self, pairs):
        now = [p for p, group in pairs if self._averages_now(group)]
        momenta = [p for p, group in pairs
                   if self._averages_now(group) and group["momentum"] and group["momentum_sync"] == "average"]
        if len(now) == len(pairs) and len(momenta) in (0, len(pairs)):   # whole flat slices, in place
            return self._layout.slices(now) + (self._field(now, "momentum_buffer") if momenta else [])
        return now + [self._buffer(p, "momentum_buffer") for p in momenta]
