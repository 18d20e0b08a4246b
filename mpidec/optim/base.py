"""What every mpidec optimizer shares: arguments, the communicator, buckets, the step counter.

An optimizer is a ``torch.optim.Optimizer``; ``step()`` does one whole iteration on this
rank - the local computation and its communication. Subclasses write the update rule in
three parts per bucket of parameters: ``_before`` (local, before communication),
``_exchanged`` (what to communicate: gossip for decentralized algorithms, allreduce for
the others) and ``_after``. A parameter without a gradient in a step takes no local
gradient step (as in ``torch.optim.SGD``) but still takes part in every exchange, so the
fused buffers have the same layout on every rank.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from ..consensus import estimate_from_residual
from .buckets import Launcher, make_buckets


class DecentralizedOptimizer(Optimizer):
    """Base class.

    ``gossips``: whether the algorithm averages with neighbours (False for the allreduce
    baselines, which then have no consensus estimate or control).

    ``comm``: a :class:`mpidec.comm.Communicator` (default: the MPI one over the world);
    ``topology``: the graph gossiped over (default: ``default_topology`` over the world, the
    static exponential graph unless the algorithm needs another); ``measure_consensus``: compute this rank's part of
    the cheap consensus estimate during each exchange (one extra pass over the exchange
    buffer; read it with :meth:`consensus_estimate`); ``consensus_control``: a
    :class:`mpidec.consensus.ConsensusControl` that adds gossip rounds until the estimate
    meets its target (``last_gossip_rounds`` says how many a step used).

    ``overlap``: start each bucket's local part and exchange from gradient hooks as soon
    as backward has produced its gradients (see :mod:`mpidec.optim.buckets`); then call
    ``step()`` after every backward. ``bucket_bytes``: the size of a bucket.
    """

    gossips = True
    default_topology = "exponential"  # a builder in mpidec.topology, over the world

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, topology=None,
                 comm=None, *, measure_consensus=True, consensus_control=None, overlap=True,
                 bucket_bytes=25 * 2**20, **specific):
        if consensus_control is not None and not self.gossips:
            raise ValueError(f"{type(self).__name__} averages by allreduce: consensus control applies "
                             "to the gossip algorithms (DSGD, DmSGD, DecentLaM, QGDmSGD, D2)")
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr}: must be >= 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"invalid momentum {momentum}: must be in [0, 1)")
        if not weight_decay >= 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}: must be >= 0")
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **specific)
        super().__init__(params, defaults)
        if comm is None:
            from ..comm import MPICommunicator

            comm = MPICommunicator(topology)
        self.comm = comm
        if topology is None:
            from ..topology import build

            topology = build(self.default_topology, comm.size)
        self.topology = topology
        self.topology.check_size(comm.size)
        self.steps = 0
        self.measure_consensus = measure_consensus or consensus_control is not None
        self.consensus_control = consensus_control
        self.last_gossip_rounds = 0
        self._residual_sq = None  # this rank's ||x_i - sum_j W_ij x_j||^2 at the last step
        comm.check_same_shapes(self.params)
        pairs = [(p, group) for group in self.param_groups for p in group["params"]]
        self._buckets = make_buckets(pairs, bucket_bytes)
        self._launcher = Launcher(self._buckets, self._launch, hooks=overlap)

    @property
    def params(self) -> list[torch.Tensor]:
        """All parameters, in group order: the layout of every exchange."""
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        """One iteration: local update and communication (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._launcher.launch_ready(everything=True)
        residual = 0.0
        for bucket in self._buckets:
            if bucket.handle is not None:
                residual += bucket.handle.wait() or 0.0
        if self.gossips:
            self._control_consensus(residual)
        for bucket in self._buckets:
            self._after(bucket.pairs)
        self._launcher.reset()
        self.steps += 1
        return loss

    # -------------------------------------------------------------- the update rule, in three parts

    def _before(self, pairs) -> None:
        """The local part, before communication, for one bucket of ``(param, group)``."""

    def _exchanged(self, pairs) -> list:
        """The tensors this bucket communicates this step (none: no communication)."""
        return [p for p, _ in pairs]

    def _after(self, pairs) -> None:
        """The part after communication."""

    @torch.no_grad()
    def _launch(self, bucket) -> None:
        """Run a bucket's local part and start its exchange (from a gradient hook or ``step()``)."""
        self._before(bucket.pairs)
        bucket.tensors = self._exchanged(bucket.pairs)
        if bucket.tensors:
            bucket.handle = self._start_exchange(bucket)

    def _start_exchange(self, bucket):
        """Gossip (with the consensus measure) or allreduce of ``bucket.tensors``; returns a handle."""
        if self.gossips:
            return self.comm.neighbor_average_async(bucket.tensors, self.steps, self.topology,
                                                    measure=self.measure_consensus)
        return self.comm.allreduce_async(bucket.tensors)

    # -------------------------------------------------------------- consensus

    def _control_consensus(self, residual: float) -> None:
        """Record the step's residual; gossip again while consensus control asks for it."""
        self._residual_sq = residual if self.measure_consensus else None
        self.last_gossip_rounds = 1
        control = self.consensus_control
        if control is None or not control.active(self.steps):
            return
        target = control.target(self)
        tensors = [t for bucket in self._buckets for t in bucket.tensors]
        while self.last_gossip_rounds < control.max_rounds and estimate_from_residual(residual, self.comm) > target:
            residual = self.comm.neighbor_average(tensors, self.steps, self.topology, measure=True)
            self.last_gossip_rounds += 1

    def consensus_estimate(self) -> float | None:
        """``sqrt((1/n) sum_i ||x_i - sum_j W_ij x_j||^2)`` of the last step's gossip input.

        Collective (a scalar allreduce): call it on every rank. None before the first
        step, without ``measure_consensus``, or for algorithms that do not gossip.
        """
        if self._residual_sq is None:
            return None
        return estimate_from_residual(self._residual_sq, self.comm)

    # -------------------------------------------------------------- pieces of update rules

    def _buffer(self, p, name) -> torch.Tensor:
        """Per-parameter state tensor ``name``, zeros on first use (saved in state_dict)."""
        state = self.state[p]
        if name not in state:
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state[name]

    @staticmethod
    def _gradient(p, group) -> torch.Tensor:
        """``g = grad f(x) + weight_decay * x`` (zero when the parameter has no gradient)."""
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        return g.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else g

    def _momentum_direction(self, p, g, group) -> torch.Tensor:
        """``m <- beta m + g``; returns ``m`` (heavy ball) or ``g + beta m`` (Nesterov)."""
        beta = group["momentum"]
        if beta == 0.0:
            return g
        m = self._buffer(p, "momentum_buffer").mul_(beta).add_(g)
        return g.add(m, alpha=beta) if group["nesterov"] else m

    def _local_sgd_step(self, pairs) -> None:
        """``m <- beta m + g ; x <- x - lr m`` (Nesterov: ``x <- x - lr (g + beta m)``) for the
        parameters with a gradient, as ``torch.optim.SGD`` does it: multi-tensor
        (``torch._foreach_*``) ops, one kernel launch per group rather than per parameter."""
        by_group = {}
        for p, group in pairs:
            if p.grad is not None:
                by_group.setdefault(id(group), (group, []))[1].append(p)
        for group, params in by_group.values():
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            beta = group["momentum"]
            if beta:
                momenta = [self._buffer(p, "momentum_buffer") for p in params]
                torch._foreach_mul_(momenta, beta)
                torch._foreach_add_(momenta, grads)
                grads = torch._foreach_add(grads, momenta, alpha=beta) if group["nesterov"] else momenta
            torch._foreach_add_(params, grads, alpha=-group["lr"])

    # -------------------------------------------------------------- checkpoints

    def state_dict(self):
        state = super().state_dict()
        state["steps"] = self.steps
        return state

    def load_state_dict(self, state_dict):
        """torch's loading, keeping this optimizer's own param-group dicts (the buckets hold
        them, so a learning rate set later through ``param_groups`` reaches the update)."""
        state_dict = dict(state_dict)
        self.steps = state_dict.pop("steps", 0)
        groups = self.param_groups
        super().load_state_dict(state_dict)
        for kept, loaded in zip(groups, self.param_groups):
            kept.update(loaded)
        self.param_groups = groups
