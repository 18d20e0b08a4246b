"""What every mpidec optimizer shares: the contract, the communicator, buckets, the step counter.

An optimizer is a ``torch.optim.Optimizer``; ``step()`` does one whole iteration on this
rank - the local computation and its communication - on the gradients *as they are when
``step()`` is called*: whatever the user did to them after ``backward()`` (GradScaler's
unscaling, clipping, accumulation over micro-batches, zeroing) and the hyperparameters in
``param_groups`` at that moment are what the update uses. Nothing that depends on a
gradient starts before ``step()``, except where the averaged gradient itself is the
result of ``backward()`` (PmSGD's overlap, as in DDP: see :mod:`mpidec.optim.pmsgd`).

Subclasses write the update rule in three parts per bucket of parameters: ``_before``
(local, before communication), ``_to_send`` (the tensors to communicate; the class's
``exchange`` says how) and ``_after``. ``step()`` runs the buckets as a pipeline: a
bucket's exchange is in flight while the next bucket's local part is computed. A
parameter without a gradient in a step takes no local gradient step (as in
``torch.optim.SGD``) but still takes part in every exchange, so the messages have the
same layout on every rank. The parameters live in flat buffers (:mod:`mpidec.optim.flat`):
a bucket is a contiguous slice of them, sent and combined in place, and the rules work
on whole slices.

The contract (one keyword-only signature)::

    Algorithm(params, lr, *, momentum=0, weight_decay=0, nesterov=False, topology=None,
              comm=None, measure_consensus=True, consensus_control=None, overlap=True,
              bucket_bytes=25 MiB, wire_dtype=None, **options)

where ``options`` are the algorithm's own, declared once in its class attribute
``options`` (name -> default). Every hyperparameter lives in the parameter groups and is
read from them at step time; the options that fix the pattern of communication are
checked at construction to agree on every rank (with the algorithm, the topology and the
bucket layout).
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from ..comm.base import Handle
from ..comm.fusion import as_wire_dtype
from ..consensus import estimate_from_residual
from .amp import skip_for_amp
from .buckets import by_group, make_buckets
from .flat import FlatParams


class DecentralizedOptimizer(Optimizer):
    """Base class: the arguments every algorithm takes (see the module docstring).

    Two class attributes say what the exchange is, each switching one thing:

    ``exchange``: what :meth:`_start_exchange` does with a bucket's tensors (those of
    :meth:`_to_send`): ``"neighbor_average"``, one synchronous gossip round
    ``x_i <- sum_j W[i, j] x_j`` (where ``wire_dtype`` applies); ``"allreduce"``, the mean
    over all workers; any other name is an algorithm's own exchange, and the algorithm
    overrides :meth:`_start_exchange` (``"majority_vote"``, ``"compressed_gossip"``,
    ``"one_sided"``).

    ``estimates_consensus``: whether the exchange yields this rank's consensus residual,
    so that :meth:`consensus_estimate` and ``consensus_control`` apply (the synchronous
    neighbour averages do; allreduce, the vote and AD-PSGD's one-sided averages do not).

    ``comm``: a :class:`mpidec.comm.Communicator` (default: the MPI one over the world);
    ``topology``: the graph gossiped over (default: ``default_topology`` over the world, the
    static exponential graph unless the algorithm needs another); ``measure_consensus``:
    compute this rank's part of the cheap consensus estimate during each exchange (one
    extra pass over the exchange buffer; read it with :meth:`consensus_estimate`);
    ``consensus_control``: a :class:`mpidec.consensus.ConsensusControl` that adds gossip
    rounds until the estimate meets its target (``last_gossip_rounds`` says how many a
    step used).

    Bytes: ``last_step_bytes`` is what this rank handed the transport for the last step
    (counted by the communicator at its primitives, ``Communicator.bytes_sent``, and by
    AD-PSGD's window: exchanges started by backward hooks, the step's own, extra consensus
    rounds), ``bytes_sent`` the total over all steps.

    ``overlap``: start communication during ``backward()`` where the algorithm can do so
    without changing a number (PmSGD averages the gradients as backward produces them);
    the other algorithms' communication depends on the final gradients and starts in
    ``step()``, pipelined over buckets of about ``bucket_bytes``.

    ``wire_dtype`` (gossip algorithms only; ``torch.bfloat16``, ``torch.float16`` or their
    names): the gossiped tensors travel rounded to it, half the bytes of float32; the
    combine runs in the parameters' dtype, with the own tensor exact and the neighbours'
    widened (:meth:`mpidec.comm.Communicator.neighbor_average_async`).

    Mixed precision: ``torch.amp.GradScaler`` drives ``step()`` directly
    (``_step_supports_amp_scaling``): the optimizer unscales the gradients itself when the
    scaler has not, and a step is skipped on *every* rank, with no change to the model or
    the optimizer state, when *any* rank's gradients are not finite (one scalar allreduce
    per step, only when a scaler is used). Each rank's scaler backs off on its own
    overflow only, so after such a step the ranks' scales may differ: the scale changes no
    number of the update, which always sees unscaled gradients.
    """

    exchange = "neighbor_average"     # what _start_exchange does: see the class docstring
    estimates_consensus = True        # the exchange yields the consensus residual (class docstring)
    push_sum = False                  # True: takes column-stochastic topologies (SGP); else doubly stochastic only
    default_topology = "exponential"  # a builder in mpidec.topology, over the world
    options: dict = {}                # the algorithm's own options and their defaults (they fix
                                      # what is communicated: checked to agree on every rank)
    divides_by_lr = False             # the rule divides by lr: lr must be > 0
    # the keyword arguments of the base that tune how (not what) it communicates
    tuning = ("overlap", "bucket_bytes", "measure_consensus", "wire_dtype")
    _step_supports_amp_scaling = True  # torch.amp.GradScaler: see the class docstring

    def __init__(self, params, lr, *, momentum=0.0, weight_decay=0.0, nesterov=False, topology=None,
                 comm=None, measure_consensus=True, consensus_control=None, overlap=True,
                 bucket_bytes=25 * 2**20, wire_dtype=None, **options):
        name = type(self).__name__
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            own = ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "none"
            raise TypeError(f"{name}() got an unexpected keyword argument {unknown[0]!r} (its own options: {own})")
        if consensus_control is not None and not self.estimates_consensus:
            raise ValueError(f"{name} does not gossip: consensus control applies "
                             "to the gossip algorithms (DSGD, DmSGD, DecentLaM, QGDmSGD, D2)")
        if wire_dtype is not None and self.exchange != "neighbor_average":
            raise ValueError(f"{name} does not gossip: wire_dtype applies to the gossip algorithms "
                             "(DSGD, DmSGD, DecentLaM, QGDmSGD, D2)")
        self.wire_dtype = as_wire_dtype(wire_dtype)
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                        **{**self.options, **options})
        self._building = True
        super().__init__(params, defaults)
        self._building = False
        if comm is None:
            from ..comm import MPICommunicator

            comm = MPICommunicator()
        self.comm = comm
        if topology is None:
            from ..topology import build

            topology = build(self.default_topology, comm.size)
        self.topology = topology
        self.topology.check_size(comm.size)
        if getattr(topology, "stochastic", "doubly") == "column" and not self.push_sum:
            from ..topology import TopologyError

            raise TopologyError(f"{name} needs a doubly stochastic topology and {topology.name!r} is only "
                                "column-stochastic (push-sum): use SGP on it, or a gossip topology")
        self.steps = 0
        self.overlap = overlap
        self.measure_consensus = measure_consensus or consensus_control is not None
        self.consensus_control = consensus_control
        self.last_gossip_rounds = 0
        self.last_step_bytes = self.bytes_sent = 0
        self._launched_bytes = 0  # sent by exchanges started since the last step (backward hooks)
        self._residual_sq = None  # this rank's ||x_i - sum_j W_ij x_j||^2 at the last step
        pairs = [(p, group) for group in self.param_groups for p in group["params"]]
        self._buckets = make_buckets(pairs, bucket_bytes)
        self._layout = FlatParams(self.params)  # the parameters become views of flat buffers
        comm.check_same_shapes(self.params)
        self._check_agreement()

    # -------------------------------------------------------------- construction checks

    def add_param_group(self, param_group) -> None:
        """torch's, with this algorithm's checks; only while the optimizer is built (the
        bucket layout of every exchange is fixed then)."""
        if not getattr(self, "_building", False):
            raise RuntimeError(f"{type(self).__name__} fixes its exchange layout at construction: pass every "
                               "parameter group to the constructor")
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1])

    def _check_group(self, group) -> None:
        """Raise ``ValueError`` naming the argument when a group's settings are invalid."""
        if not group["lr"] >= 0.0:
            raise ValueError(f"invalid lr {group['lr']}: must be >= 0")
        if self.divides_by_lr and not group["lr"] > 0:
            raise ValueError(f"invalid lr {group['lr']}: {type(self).__name__} divides by lr, it must be > 0")
        if not 0.0 <= group["momentum"] < 1.0:
            raise ValueError(f"invalid momentum {group['momentum']}: must be in [0, 1)")
        if not group["weight_decay"] >= 0.0:
            raise ValueError(f"invalid weight_decay {group['weight_decay']}: must be >= 0")
        if group["nesterov"] and group["momentum"] == 0.0:
            raise ValueError("nesterov=True needs momentum > 0")

    def _check_agreement(self) -> None:
        """Collective: every rank must run the same algorithm, with the same options, on the
        same topology and bucket layout (the shapes are checked before); one clear error otherwise."""
        mine = {
            "the algorithm": type(self).__name__,
            "the algorithm's options": [{k: g[k] for k in self.options} for g in self.param_groups],
            "where momentum is used (it decides what is exchanged)": [g["momentum"] > 0 for g in self.param_groups],
            "the topology (name, workers)": (self.topology.name, self.topology.n),
            "the buckets (parameters per bucket: bucket_bytes)": [len(b.pairs) for b in self._buckets],
            "the wire dtype": str(self.wire_dtype),
        }
        everyone = self.comm.allgather_object(mine)
        for rank, theirs in enumerate(everyone):
            for what, value in theirs.items():
                if value != everyone[0][what]:
                    raise ValueError(f"{what} differs between ranks: {everyone[0][what]!r} on rank 0, "
                                     f"{value!r} on rank {rank}; every rank must build the same optimizer")

    @property
    def params(self) -> list[torch.Tensor]:
        """All parameters, in group order: the layout of every exchange."""
        return [p for group in self.param_groups for p in group["params"]]

    # -------------------------------------------------------------- the step

    @torch.no_grad()
    def step(self, closure=None):
        """One iteration: local update and communication (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._layout.check()
        sent, launched = self._bytes_so_far(), self._launched_bytes
        if not skip_for_amp(self):
            self._iterate()
            self.steps += 1
        self.last_step_bytes = launched + self._bytes_so_far() - sent
        self.bytes_sent += self.last_step_bytes
        self._launched_bytes = 0
        return loss

    def _bytes_so_far(self) -> float:
        """Bytes this rank has handed the transport so far (its communicator's count)."""
        return self.comm.bytes_sent

    def _iterate(self) -> None:
        """The update of one step: every bucket's local part and exchange in order, then the rest."""
        residual = 0.0
        for bucket in self._buckets:
            self._launch(bucket)
        for bucket in self._buckets:
            if bucket.handle is not None:
                residual += bucket.handle.wait() or 0.0
                bucket.handle = None
        if self.estimates_consensus:
            self._control_consensus(residual)
        for bucket in self._buckets:
            self._after(bucket.pairs)

    # -------------------------------------------------------------- the update rule, in three parts

    def _before(self, pairs) -> None:
        """The local part, before communication, for one bucket of ``(param, group)``."""

    def _to_send(self, pairs) -> list:
        """The tensors this bucket communicates this step (none: no communication): by
        default the parameters, as the bucket's slice of the flat buffers (sent in place)."""
        return self._layout.slices([p for p, _ in pairs])

    def _after(self, pairs) -> None:
        """The part after communication."""

    def _launch(self, bucket) -> None:
        """Run a bucket's local part and start its exchange."""
        self._before(bucket.pairs)
        bucket.tensors = self._to_send(bucket.pairs)
        if bucket.tensors:
            sent = self._bytes_so_far()
            bucket.handle = self._start_exchange(bucket)
            self._launched_bytes += self._bytes_so_far() - sent

    def _start_exchange(self, bucket):
        """Start the ``exchange`` of ``bucket.tensors`` (gossip with the consensus measure, or
        allreduce); returns a handle. Algorithms with their own exchange override it."""
        fuse = not self._layout.is_flat(bucket.tensors)  # flat slices travel in place, one message each
        if self.exchange == "neighbor_average":
            return self._gossip_async(bucket.tensors, measure=self.measure_consensus)
        if self.exchange == "allreduce":
            return self.comm.allreduce_async(bucket.tensors, fuse=fuse)
        raise NotImplementedError(f"{type(self).__name__}: exchange {self.exchange!r} needs its own _start_exchange")

    def _gossip_async(self, tensors, measure: bool):
        """Start one gossip round of ``tensors``; ``wait()`` returns the consensus residual of
        the model's tensors only (with ``measure``): state gossiped along with the model
        (DmSGD ``yu``'s momentum, GT's tracker) is combined in place without the measure's
        scratch and norm (4 passes less per model-sized message), and the estimate is the
        models' distance, as :meth:`consensus_estimate` says."""
        model = [t for t in tensors if self._layout.is_model(t)]
        state = [t for t in tensors if not self._layout.is_model(t)]
        handles = [self.comm.neighbor_average_async(part, self.topology, self.steps, measure=measure and part is model,
                                                    fuse=not self._layout.is_flat(part), wire_dtype=self.wire_dtype)
                   for part in (model, state) if part]
        if len(handles) == 1:
            return handles[0]
        return Handle(lambda: [handle.wait() for handle in handles][0])

    # -------------------------------------------------------------- mixed precision

    def _overflowed(self, here: bool) -> bool:
        """Whether to skip the step, given whether this rank's gradients overflowed: on every
        rank when any rank's did (one scalar allreduce)."""
        return self.comm.allreduce_scalar(float(here), "max") > 0

    # -------------------------------------------------------------- consensus

    def _control_consensus(self, residual: float) -> None:
        """Record the step's residual; gossip again while consensus control asks for it."""
        self._residual_sq = residual if self.measure_consensus else None
        self.last_gossip_rounds = 1
        control = self.consensus_control
        if control is None or not control.active(self.steps):
            return
        target = control.target(self.steps, self.param_groups[0]["lr"], self._grad_rms)
        tensors = [t for bucket in self._buckets for t in bucket.tensors]
        while self.last_gossip_rounds < control.max_rounds and estimate_from_residual(residual, self.comm) > target:
            residual = self._gossip_async(tensors, measure=True).wait()
            self.last_gossip_rounds += 1

    def _grad_rms(self) -> float:
        """``sqrt((1/n) sum_i ||g_i||^2)`` over the workers' gradients (collective)."""
        local = sum(float(torch.sum(p.grad.double() ** 2)) for p in self.params if p.grad is not None)
        return math.sqrt(max(self.comm.allreduce_scalar(local, "mean"), 0.0))

    def consensus_estimate(self) -> float | None:
        """``sqrt((1/n) sum_i ||x_i - sum_j W_ij x_j||^2)`` of the last step's gossip input:
        the models (state gossiped with them, DmSGD ``yu``'s momentum, GT's tracker, is not
        measured).

        Collective (a scalar allreduce): call it on every rank. None before the first
        step, without ``measure_consensus``, or for algorithms that do not gossip.
        """
        if self._residual_sq is None:
            return None
        return estimate_from_residual(self._residual_sq, self.comm)

    # -------------------------------------------------------------- pieces of update rules

    def _buffer(self, p, name) -> torch.Tensor:
        """Per-parameter state tensor ``name``, zeros on first use (saved in state_dict): ``p``'s
        view of the flat field ``name`` (:mod:`mpidec.optim.flat`)."""
        state = self.state[p]
        if name not in state:
            state[name] = self._layout.view(name, p)
        return state[name]

    def _field(self, params, name) -> list:
        """The flat slices of field ``name`` covering ``params`` (consecutive), every
        parameter's state entry made first: for update rules written over whole slices."""
        for p in params:
            self._buffer(p, name)
        return self._layout.slices(params, name)

    @staticmethod
    def _gradient(p, group) -> torch.Tensor:
        """``g = grad f(x) + weight_decay * x`` (zero when the parameter has no gradient)."""
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        return g.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else g

    def _local_sgd_step(self, pairs, momentum: bool = True) -> None:
        """``m <- beta m + g ; x <- x - lr m`` (Nesterov: ``x <- x - lr (g + beta m)``) for the
        parameters with a gradient, as ``torch.optim.SGD`` does it: multi-tensor
        (``torch._foreach_*``) ops, one kernel launch per group rather than per parameter.
        ``momentum=False``: ``x <- x - lr g`` whatever the group's momentum."""
        for group, params in by_group(pairs, with_grad=True):
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            directions = self._momentum_directions(params, grads, group) if momentum else grads
            torch._foreach_add_(params, directions, alpha=-group["lr"])

    def _momentum_directions(self, params, grads, group) -> list:
        """The one momentum rule (as ``torch.optim.SGD``): ``m <- beta m + g`` and the direction
        ``m`` (heavy ball) or ``g + beta m`` (Nesterov); ``g`` itself when beta = 0. Multi-tensor;
        ``grads`` are not modified."""
        beta = group["momentum"]
        if not beta:
            return grads
        momenta = [self._buffer(p, "momentum_buffer") for p in params]
        torch._foreach_mul_(momenta, beta)
        torch._foreach_add_(momenta, grads)
        return torch._foreach_add(grads, momenta, alpha=beta) if group["nesterov"] else momenta

    # -------------------------------------------------------------- checkpoints

    def state_dict(self):
        state = super().state_dict()
        state["steps"] = self.steps
        return state

    def load_state_dict(self, state_dict):
        """torch's loading, keeping this optimizer's own param-group dicts (the buckets hold
        them, so a learning rate set later through ``param_groups`` reaches the update), and
        the state tensors of a parameter's shape copied into the flat fields (the update
        rules act on whole slices of them)."""
        state_dict = dict(state_dict)
        self.steps = state_dict.pop("steps", 0)
        groups = self.param_groups
        super().load_state_dict(state_dict)
        for kept, loaded in zip(groups, self.param_groups):
            kept.update(loaded)
        self.param_groups = groups
        for p in self.params:  # state of the parameter's shape goes back into the flat fields
            for name, value in self.state[p].items():
                if torch.is_tensor(value) and value.shape == p.shape and value.dtype == p.dtype:
                    view = self._layout.view(name, p)
                    view.copy_(value)
                    self.state[p][name] = view
