"""Overlap SGP: push-sum whose messages arrive ``delay`` steps after they were sent (Assran et al. 2019)."""

from __future__ import annotations

from collections import deque

import torch

from ..comm.base import Handle
from .sgp import SGP


class OSGP(SGP):
    r"""Overlap Stochastic Gradient Push: SGP whose pushes are received ``delay`` steps late::

        Z  = X / w                            (the de-biased model: the parameters hold Z)
        M  = beta M + G(Z) ;  H = X - lr M    (Nesterov: H = X - lr (G + beta M))
        push (P_t - D_t) H and (P_t - D_t) w  (D_t = diag(P_t): node i sends P_t[j, i] H_i to j)
        X+ = D_t H + R_{t - delay}            R_s = (P_s - D_s) H_s, the pushes of step s
        w+ = D_t w + (P_s - D_s) w_s          (zero while t < delay)

    With ``delay = 0`` this is SGP's ``X+ = P_t H``; OSGP is SGP with ``delay >= 1``
    (default 1), a class of its own so that ``mpidec train --algorithm OSGP`` names it.
    Nothing is lost: every push is in flight for exactly ``delay`` steps, so with zero
    gradients ``sum_i X_i + (in flight)`` and ``sum_i w_i + (in flight)`` are preserved by
    every step, and ``Z_i = X_i / w_i`` still converges to the average (the in-flight
    mass is a lag, not a loss). ``P_t`` is column-stochastic (any topology SGP takes).

    The exchange really is in flight across steps: step t starts one non-blocking
    neighbour allgather per bucket (:meth:`mpidec.comm.Communicator.neighbor_allgather_async`,
    an ``MPI_Ineighbor_allgather`` under MPI) and waits only for the one started at step
    ``t - delay``, so ``delay`` steps of computation overlap each message (Assran et al.'s
    code keeps one message in flight and mixes it whenever it has arrived; here every
    message takes exactly ``delay`` steps, as in their bounded-delay analysis, so runs are
    deterministic and MPI equals the simulator). Receivers apply the weights
    ``P_s[i, j]`` to what arrives (every rank knows the topology): one model and its
    weights cross each edge per step, as in SGP.

    ``delay`` (an integer >= 1, the same in every parameter group) is read at every step;
    lowering it receives the overdue messages at once. The messages in flight are state:
    ``state_dict()`` waits for them (it does not apply them) and saves, per parameter,
    ``in_flight`` (the received pushes still to be added to ``X``, oldest first) and
    ``in_flight_weight`` (those of ``w``); after ``load_state_dict`` they are added at the
    steps they would have been, so a resumed run is bit-identical. Not applied when training
    ends: a final model is each worker's ``Z``; an optimizer dropped with pushes in flight
    leaves them to its communicator, which completes them (without applying them) at its
    next operation. ``consensus_control``, the consensus estimate and ``wire_dtype`` do not
    apply; ``last_gossip_rounds`` is 1 after every step, as for SGP (the round started in
    that step).
    """

    exchange = "delayed_push_sum"  # _start_exchange below
    estimates_consensus = False
    options = {"delay": 1}
    tuning = ("overlap", "bucket_bytes")

    def __init__(self, params, lr, **kwargs):
        super().__init__(params, lr, **kwargs)
        self._in_flight: deque = deque()  # per step sent and not yet received: a handle per bucket
        self._due: list = []              # the steps received in this one (oldest first)
        self._sent: list = []             # this step's handles, a bucket at a time

    def _check_group(self, group):
        super()._check_group(group)
        delay = group["delay"]
        if not (isinstance(delay, int) and not isinstance(delay, bool) and delay >= 1):
            raise ValueError(f"invalid delay {delay!r}: must be an integer >= 1 (delay=0 is SGP)")
        if delay != self.param_groups[0]["delay"]:
            raise ValueError(f"OSGP: delay must be the same in every parameter group ({delay} and "
                             f"{self.param_groups[0]['delay']})")

    def _iterate(self):
        overdue = len(self._in_flight) + 1 - self.param_groups[0]["delay"]
        self._due = [self._in_flight.popleft() for _ in range(max(overdue, 0))]
        self._sent = []
        super()._iterate()
        self._in_flight.append(self._sent)
        self.last_gossip_rounds = 1  # as SGP: one push-sum round a step (received ``delay`` steps later)

    def _start_exchange(self, bucket):
        """Push this bucket's ``H`` and ``w``, keep ``D_t`` of them; the handle adds the
        pushes that are due (sent ``delay`` steps ago) to them."""
        tensors, k = bucket.tensors, len(self._sent)
        self._sent.append(self._push(tensors))
        torch._foreach_mul_(tensors, self._self_weight())
        due = [step[k] for step in self._due]

        def finish():
            for handle in due:
                torch._foreach_add_(tensors, handle.wait())

        return Handle(finish)

    def _self_weight(self) -> float:
        topo = self.topology.at(self.steps)
        return float(topo.W[self.comm.rank, self.comm.rank])

    def _push(self, tensors) -> Handle:
        """Start sending ``tensors`` to this step's out-neighbours; the handle's ``wait()``
        returns, aligned with ``tensors``, ``sum_j P[i, j] x_j`` over the in-neighbours ``j``."""
        topo, me = self.topology.at(self.steps), self.comm.rank
        coefficients = topo.W[me, topo.in_neighbors(me)]
        kinds: dict = {}
        for index, t in enumerate(tensors):                     # one message per dtype and device
            kinds.setdefault((t.dtype, t.device), []).append(index)
        started = [(indices, self.comm.neighbor_allgather_async(
            torch.cat([tensors[i].detach().reshape(-1) for i in indices]), self.topology, self.steps))
            for indices in kinds.values()]

        def finish():
            received = [None] * len(tensors)
            for indices, handle in started:
                rows = handle.wait()
                total = torch.mv(rows.t(), torch.as_tensor(coefficients, dtype=rows.dtype, device=rows.device))
                offset = 0
                for i in indices:
                    size = tensors[i].numel()
                    received[i] = total[offset:offset + size].view_as(tensors[i])
                    offset += size
            return received

        return Handle(finish)

    # -------------------------------------------------------------- checkpoints

    def state_dict(self):
        """torch's, with the pushes in flight (waited for, not applied) in each parameter's state."""
        state = super().state_dict()
        if self._in_flight:
            for index, (x, w) in enumerate(self._received_in_flight()):
                state["state"][index] = {**state["state"].get(index, {}), "in_flight": x, "in_flight_weight": w}
        return state

    def _received_in_flight(self) -> list:
        """``[(X pushes, w pushes)]`` received and not yet applied, per parameter (in parameter
        order), each stacked oldest first."""
        pieces = {id(p): ([], []) for p in self.params}
        for step in self._in_flight:
            for bucket, handle in zip(self._buckets, step):
                received, params = handle.wait(), [p for p, _ in bucket.pairs]
                for p, x, w in zip(params, received, received[len(params):]):
                    pieces[id(p)][0].append(x)
                    pieces[id(p)][1].append(w)
        return [(torch.stack(pieces[id(p)][0]), torch.stack(pieces[id(p)][1])) for p in self.params]

    def load_state_dict(self, state_dict):
        """torch's; the saved pushes in flight replace this optimizer's own (which are completed
        and dropped: every rank loads at the same step)."""
        for step in self._in_flight:
            for handle in step:
                handle.wait()
        super().load_state_dict(state_dict)
        saved = [(self.state[p].pop("in_flight", None), self.state[p].pop("in_flight_weight", None))
                 for p in self.params]
        pending = 0 if saved[0][0] is None else len(saved[0][0])
        index = {id(p): i for i, p in enumerate(self.params)}
        self._in_flight = deque()
        for s in range(pending):
            step = []
            for bucket in self._buckets:
                rows = [saved[index[id(p)]] for p, _ in bucket.pairs]
                received = [x[s] for x, _ in rows] + [w[s] for _, w in rows]
                step.append(Handle(lambda received=received: received))
            self._in_flight.append(step)
