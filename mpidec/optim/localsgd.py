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

    def _update(self):
        self._local_sgd_step()
        if (self.steps + 1) % self.defaults["period"]:
            return
        averaged = self.params
        momenta = [self._buffer(p, "momentum_buffer") for p in averaged] if self.defaults["momentum"] else []
        if self.defaults["momentum_averaging"]:
            averaged = averaged + momenta
        else:
            for m in momenta:
                m.zero_()
        self.comm.allreduce(averaged)
