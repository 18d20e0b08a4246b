"""Outer optimizers for local training: DiLoCo (Douillard et al. 2023) and SlowMo (Wang et al. 2020)."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from .base import DecentralizedOptimizer
from .buckets import by_group

AVERAGING = ("allreduce", "gossip")


class DiLoCo(DecentralizedOptimizer):
    r"""Local steps of any torch optimizer, and every ``period`` steps an outer Nesterov step
    on the averaged change of the models::

        X = inner_step(X, G)                        (every step, no communication)
        after steps period, 2 period, ...:
            Delta = A - avg(X)                      (the pseudo-gradient; A: the model at the last sync)
            Mo    = mu Mo + Delta
            A     = A - outer_lr (Delta + mu Mo)    (outer_nesterov=False: A - outer_lr Mo)
            X     = A

    ``avg`` is the mean over the workers (``averaging="allreduce"``: DiLoCo, SlowMo) or
    one gossip round ``W X`` (``averaging="gossip"``: each worker keeps its own ``A``).
    DiLoCo's settings: inner AdamW, ``period`` in the hundreds, ``outer_lr=0.7``,
    ``outer_momentum=0.9``, Nesterov; SlowMo's: inner SGD, ``outer_nesterov=False``,
    ``outer_lr=1``. With ``period=1``, ``outer_lr=1`` and ``outer_momentum=0`` it is PmSGD
    (allreduce; with equal initial models) or DmSGD (gossip). Sent: one model every
    ``period`` steps. State: the inner optimizer's, ``A`` and ``Mo`` (two models).

    Two ways to build it. From the common arguments (as ``mpidec train`` does)::

        DiLoCo(params, lr, momentum=0.9, inner="SGD", period=50)          # torch.optim.SGD inside
        DiLoCo(params, lr, weight_decay=0.1, inner="AdamW", period=500)   # any torch.optim name

    ``lr``, ``weight_decay`` (and for SGD ``momentum``, ``nesterov``) go to the inner
    optimizer; other optimizers take ``momentum=0`` and their own settings through the
    groups (``betas`` for AdamW, at their torch defaults). Or wrap an optimizer you built::

        opt = DiLoCo.wrap(torch.optim.AdamW(model.parameters(), lr=4e-4), period=500)

    Either way the inner optimizer and DiLoCo share their parameter groups: a scheduler
    on either (``group["lr"]``, ``group["outer_lr"]``) reaches the next step. Call
    ``opt.step()`` after every backward; ``state_dict()`` holds both optimizers' state.
    Start every worker from the same model (as ``mpidec train`` does): with allreduce,
    ``A`` starts as each worker's own model at its first step.
    """

    exchange = "allreduce"  # both set per instance from ``averaging``
    estimates_consensus = False
    options = {"inner": "SGD", "period": 8, "outer_lr": 0.7, "outer_momentum": 0.9, "outer_nesterov": True,
               "averaging": "allreduce"}

    @classmethod
    def wrap(cls, inner: Optimizer, **kwargs) -> "DiLoCo":
        """DiLoCo around an optimizer already built on the model's parameters (its groups,
        and their hyperparameters, become DiLoCo's)."""
        return cls(inner.param_groups, inner.defaults.get("lr", 0.0), inner=inner, **kwargs)

    def __init__(self, params, lr, *, inner="SGD", consensus_control=None, **kwargs):
        if consensus_control is not None:
            raise ValueError("DiLoCo takes no consensus_control: it averages once every period steps")
        given = self._given = inner if isinstance(inner, Optimizer) else None
        super().__init__(params, lr, inner=type(inner).__name__ if given else inner, **kwargs)
        for what in ("inner", "averaging"):
            if len({group[what] for group in self.param_groups}) > 1:
                raise ValueError(f"DiLoCo: {what} must be the same in every parameter group")
        if self.param_groups[0]["averaging"] == "gossip":
            self.exchange, self.estimates_consensus = "neighbor_average", True
        self.inner = given or build_inner(self.param_groups[0]["inner"], self.param_groups)
        if not all(a is b for a, b in zip(self.inner.param_groups, self.param_groups)):
            raise ValueError("DiLoCo.wrap: the inner optimizer must be built on the same parameter groups")

    def _check_group(self, group):
        super()._check_group(group)
        period = group["period"]
        if not (isinstance(period, int) and not isinstance(period, bool) and period >= 1):
            raise ValueError(f"invalid period {period!r}: must be an integer >= 1")
        if not group["outer_lr"] >= 0.0:
            raise ValueError(f"invalid outer_lr {group['outer_lr']}: must be >= 0")
        if not 0.0 <= group["outer_momentum"] < 1.0:
            raise ValueError(f"invalid outer_momentum {group['outer_momentum']}: must be in [0, 1)")
        if group["averaging"] not in AVERAGING:
            raise ValueError(f"invalid averaging {group['averaging']!r}: use one of {', '.join(AVERAGING)}")
        inner = type(self._given) if self._given is not None else getattr(torch.optim, str(group["inner"]), None)
        if not (isinstance(inner, type) and issubclass(inner, Optimizer)):
            raise ValueError(f"invalid inner {group['inner']!r}: give the name of a torch.optim optimizer "
                             "(SGD, AdamW, ...) or use DiLoCo.wrap(optimizer)")
        if inner is not torch.optim.SGD and group["momentum"]:
            raise ValueError(f"inner {group['inner']} takes no momentum (it has its own settings, e.g. betas): "
                             "use momentum=0 (--momentum 0)")

    def _syncs_now(self, group) -> bool:
        return (self.steps + 1) % group["period"] == 0

    def _iterate(self):
        for p in self.params:
            if "anchor" not in self.state[p]:
                self.state[p]["anchor"] = p.detach().clone()
        self.inner.step()
        super()._iterate()

    def _control_consensus(self, residual):
        if any(bucket.tensors for bucket in self._buckets):  # keep the estimate of the last average
            super()._control_consensus(residual)

    def _to_send(self, pairs):
        now = [p for p, group in pairs if self._syncs_now(group)]
        return self._layout.slices(now) if len(now) == len(pairs) else now

    def _after(self, pairs):
        for group, params in by_group([(p, g) for p, g in pairs if self._syncs_now(g)]):
            anchors = [self.state[p]["anchor"] for p in params]
            deltas = torch._foreach_sub(anchors, params)                     # A - avg(X)
            mu = group["outer_momentum"]
            if mu:
                momenta = [self._buffer(p, "outer_momentum") for p in params]
                torch._foreach_mul_(momenta, mu)
                torch._foreach_add_(momenta, deltas)
                if group["outer_nesterov"]:
                    torch._foreach_add_(deltas, momenta, alpha=mu)
                else:
                    deltas = momenta
            torch._foreach_add_(anchors, deltas, alpha=-group["outer_lr"])
            torch._foreach_copy_(params, anchors)

    def state_dict(self):
        state = super().state_dict()
        state["inner_state"] = self.inner.state_dict()["state"]
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        inner_state = state_dict.pop("inner_state", {})
        super().load_state_dict(state_dict)
        self.inner.load_state_dict({"state": inner_state, "param_groups": self.inner.state_dict()["param_groups"]})
        self.inner.param_groups = list(self.param_groups)  # torch's loading made new group dicts: share ours again


def build_inner(name: str, param_groups) -> Optimizer:
    """``torch.optim.<name>`` on DiLoCo's own group dicts (each group's lr, weight_decay, ...
    are used as they are; the optimizer adds its other defaults to the groups)."""
    return getattr(torch.optim, name)(param_groups, lr=param_groups[0]["lr"])
