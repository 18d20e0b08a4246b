"""signSGD and Signum with majority vote: 1-bit communication (Bernstein et al. 2018, 2019)."""

from __future__ import annotations

import torch

from .base import DecentralizedOptimizer
from .buckets import by_group


class SignumMV(DecentralizedOptimizer):
    r"""Signum with majority vote (``momentum=0`` gives signSGD)::

        M = beta M + G                          (per worker; G without weight decay)
        V = sign( sum over workers of sign(M) ) (the vote, the same on every worker)
        X+ = X - lr (V + weight_decay X)

    Each worker sends the signs of its momentum as bits and receives the vote as bits
    (:meth:`mpidec.comm.Communicator.majority_vote_async`: an all-to-all of packed shards,
    a vote per shard, an allgather): ``2 (n - 1) / n`` bits per parameter each step, 1/32
    of a float32 ring allreduce. ``sign(0)`` counts as +1; a tied vote (even number of
    workers) is +1 at even positions and -1 at odd ones. Models stay identical when they
    start identical. Memory: momentum plus one scratch model for the vote. The vote depends on
    the final gradients: it starts in ``step()``.
    """

    exchange = "majority_vote"  # _start_exchange below
    estimates_consensus = False

    def __init__(self, params, lr, *, momentum=0.9, **kwargs):
        super().__init__(params, lr, momentum=momentum, **kwargs)
        self._votes = {}  # scratch: this step's vote per parameter (not part of the state)

    def _check_group(self, group):
        super()._check_group(group)
        if group["nesterov"]:
            raise ValueError("SignumMV has no Nesterov form: use nesterov=False")

    def _before(self, pairs):
        for group, params in by_group(pairs, with_grad=True):              # m <- beta m + g
            self._momentum_directions(params, [p.grad for p in params], group)

    def _to_send(self, pairs):
        def signal(p, group):
            if group["momentum"]:
                return self._buffer(p, "momentum_buffer")
            return p.grad if p.grad is not None else torch.zeros_like(p)

        return [signal(p, group) for p, group in pairs]

    def _start_exchange(self, bucket):
        votes = [self._votes.setdefault(p, torch.empty_like(p)) for p, _ in bucket.pairs]
        return self.comm.majority_vote_async(bucket.tensors, votes)

    def _after(self, pairs):
        for p, group in pairs:
            if group["weight_decay"]:                                        # after the vote, not in G
                p.mul_(1 - group["lr"] * group["weight_decay"])
            p.add_(self._votes[p], alpha=-group["lr"])
