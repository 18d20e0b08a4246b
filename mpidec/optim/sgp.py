"""Stochastic Gradient Push: push-sum gossip on directed, time-varying graphs (Assran et al. 2019)."""

from __future__ import annotations

import torch

from .base import DecentralizedOptimizer
from .buckets import by_group


class SGP(DecentralizedOptimizer):
    r"""Stochastic Gradient Push with local momentum, over a column-stochastic ``P``::

        Z  = X / w                          (the de-biased model: the parameters hold Z)
        M  = beta M + G(Z)
        X+ = P (X - lr M)                   (Nesterov: X+ = P (X - lr (G + beta M)))
        w+ = P w                            (the push-sum weight, 1 at the start)

    On a directed graph a node knows whom it sends to but not who sends to it, so the
    weights it can choose sum to one over its *out*-neighbours: P is column-stochastic
    (``topology.push_weights``, ``from_digraph``, ``random_push``), and plain gossip
    ``X <- P X`` does not reach the average. Push-sum runs the same mixing on a scalar
    weight: ``sum_i X_i`` and ``sum_i w_i`` are preserved by every step, so
    ``sum_i w_i Z_i / n`` is the true average of the numerators, and ``Z_i = X_i / w_i``
    converges to it. Any topology is accepted (doubly stochastic ones keep ``w = 1``: SGP
    is then DmSGD's adapt-then-combine form).

    Sent per step: one model and its weight (one extra number per parameter tensor, in
    the same fused buffer). The parameters hold ``Z``; the numerator is rebuilt as
    ``w Z`` at each step, so the state is the momentum and the weight. The weight has the
    parameter's dtype (as in Assran et al.'s code): in float16 the de-biasing is exact to
    float16 precision only. The default topology is ``one_peer_exponential`` (one message
    per step, the paper's choice). :class:`mpidec.optim.OSGP` is the overlapped variant: the
    pushes are received ``delay`` steps after they are sent.
    """

    push_sum = True
    default_topology = "one_peer_exponential"

    def _weights(self, params) -> list:
        state = self.state
        for p in params:
            if "push_weight" not in state[p]:
                state[p]["push_weight"] = torch.ones(1, dtype=p.dtype, device=p.device)
        return [state[p]["push_weight"] for p in params]

    def _before(self, pairs):
        steps = []
        for group, params in by_group(pairs, with_grad=True):                         # directions at Z
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            steps.append((params, self._momentum_directions(params, grads, group), group["lr"]))
        params = [p for p, _ in pairs]
        torch._foreach_mul_(params, self._weights(params))                            # X = w Z
        for with_grad, directions, lr in steps:
            torch._foreach_add_(with_grad, directions, alpha=-lr)                     # X - lr M

    def _to_send(self, pairs):
        params = [p for p, _ in pairs]
        return params + self._weights(params)

    def _after(self, pairs):
        params = [p for p, _ in pairs]
        torch._foreach_div_(params, self._weights(params))                            # Z = X / w
