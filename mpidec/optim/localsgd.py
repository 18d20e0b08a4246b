"""Local SGD with periodic model averaging: PR-SGD with momentum (Yu, Jin & Yang 2019)."""

from __future__ import annotations

from .base import DecentralizedOptimizer


class LocalSGD(DecentralizedOptimizer):
    r"""Local heavy-ball (or Nesterov) steps, global averaging every ``period`` steps::

        M = beta M + G ;  X = X - lr M                 (every step, no communication)
        after steps period, 2 period, ...:
            momentum_averaging=True:   X = mean(X),  M = mean(M)     (2 models, allreduce)
            momentum_averaging=False:  X = mean(X),  M = 0           (1 model, "cleared")

    With ``period=1`` and equal initial models this is centralized heavy ball (PmSGD).
    """

    gossips = False

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, topology=None,
                 comm=None, period=1, momentum_averaging=True, **options):
        if not (isinstance(period, int) and period >= 1):
            raise ValueError(f"invalid period {period!r}: must be an integer >= 1")
        super().__init__(params, lr, momentum, weight_decay, nesterov, topology, comm,
                         period=period, momentum_averaging=momentum_averaging, **options)

    def _averages_now(self) -> bool:
        return (self.steps + 1) % self.defaults["period"] == 0

    def _momenta(self, pairs) -> list:
        return [self._buffer(p, "momentum_buffer") for p, _ in pairs] if self.defaults["momentum"] else []

    def _before(self, pairs):
        self._local_sgd_step(pairs)
        if self._averages_now() and not self.defaults["momentum_averaging"]:
            for m in self._momenta(pairs):
                m.zero_()

    def _exchanged(self, pairs):
        if not self._averages_now():
            return []
        params = [p for p, _ in pairs]
        return params + self._momenta(pairs) if self.defaults["momentum_averaging"] else params
