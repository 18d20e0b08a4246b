r"""SVRG and Katyusha X: variance-reduced optimization of a finite sum, data-parallel over ranks.

The problem is a finite sum whose average is (strongly) convex while its terms need not be,
the "sum-of-nonconvex" setting of Allen-Zhu, *Katyusha X: Simple Momentum Method for
Stochastic Sum-of-Nonconvex Optimization*, ICML 2018 (PMLR 80:179-185; arXiv 1802.03866)::

    minimise  f(x) = (1/n) sum_i f_i(x),   f sigma-strongly convex, every f_i L-smooth.

**SVRG, one epoch** (``SVRG^1ep(x~, m, eta)``; Johnson and Zhang 2013, mini-batch form)::

    mu = grad f(x~)                                         one full gradient, at the snapshot x~
    x_0 = x~;  x_{t+1} = x_t - eta (grad f_B(x_t) - grad f_B(x~) + mu),   t = 0 .. m-1
    output x_m                                              (the last iterate)

``grad f_B`` is the mean gradient over the step's mini-batch B (the same B at both points).

**SVRG** (:class:`SVRG`) restarts every epoch from the last output: ``x~_{k+1} = y_{k+1}``.

**Katyusha X** (:class:`KatyushaX`, the strongly convex variant with a constant tau) is SVRG
plus one line, the momentum that couples the last two epoch outputs and the epoch's start::

    y_0 = x~_0 = x_0
    y_{k+1}  = SVRG^1ep(x~_k, m, eta)
    x~_{k+1} = (3/2 y_{k+1} + 1/2 x~_k - (1 - tau) y_k) / (1 + tau)           (the extra line)

and the answer after K epochs is ``y_K``. The line is the linear coupling
``x~ = tau z + (1 - tau) y`` of the SVRG outputs with a mirror-descent sequence ``z`` that
steps along ``g_{k+1} = (x~_k - y_{k+1}) / (m eta)`` with step ``alpha = m eta / (2 tau)``
and a ``sigma/4 ||z - y_{k+1}||^2`` term, once ``z`` is eliminated, which holds for the
paper's choice ``tau = sqrt(m eta sigma) / 2`` (tests/test_katyusha.py checks the identity).
The complexity as it is usually quoted (single-sample batches, ``m = n``): ``O((n + n^(3/4)
sqrt(L/sigma)) log 1/eps)`` gradients against SVRG's ``O((n + sqrt(n) L/sigma) log 1/eps)`` on
such sums, a speed-up of about ``sqrt(kappa / sqrt(n))`` once ``kappa = L/sigma > sqrt(n)``;
with mini-batches of b the epoch count is unchanged for b up to about sqrt(n) (the "linear
parallel speed-up"). docs/katyusha.md has measured figures.

Source note: the paper's text (its algorithm box and equation numbers) could not be read
in the environment this was written in, so no equation number is quoted. The rule above is
reconstructed from the issue (#16), from the linear-coupling derivation (checked in the
tests), and agrees with public implementations of the line. The paper's analysis may draw
the epoch length at random (a geometric variable of mean m); here it is the fixed
``epoch_length`` that practical implementations use. tau = 0 is not SVRG: no tau turns the
line into ``x~ = y`` (its coefficient of ``x~_k`` is ``1 / (2 (1 + tau))``), so tau must lie in
``(0, 1]`` (the coupling weights ``tau, 1 - tau``); use :class:`SVRG` for SVRG.

**Distributed** (data-parallel, exact): rank r holds shard r of the sum, the same number of
terms on every rank. ``full_closure`` gives the mean gradient over the rank's shard and one
allreduce averages them into ``mu`` (once per epoch). Each step's mini-batch is split over
the ranks: a rank's ``closure`` covers its own part ``B_r`` (``b / p`` terms) and one
allreduce per step averages ``grad f_{B_r}(x_t) - grad f_{B_r}(x~)`` into
``grad f_B(x_t) - grad f_B(x~)``, ``B = B_1 u ... u B_p``. So p ranks with ``b / p`` terms
each follow the iterates of one process with batch ``B`` (up to rounding), and every rank
holds the same x. With shards of unequal sizes, weight each rank's loss by
``p * shard_size / n`` so that the averages stay the global means.

**Usage**: ``step(closure, full_closure=...)``. ``closure()`` computes the loss of this rank's
current mini-batch and calls ``backward()``; the optimizer calls it twice per step, at the
current point and at the snapshot (parameters swapped in and back), so it must use the same
batch both times. ``full_closure()`` does the same over the rank's whole shard; the
optimizer calls it at the first step of each epoch. Both must return the loss; gradients are
cleared before each call (a parameter without a gradient counts as zero gradient)::

    opt = KatyushaX(model.parameters(), lr=0.05, epoch_length=len(loader), tau=0.2)

    def full_loss():                     # this rank's whole shard
        loss = loss_fn(model(X_shard), y_shard)
        loss.backward()
        return loss

    for epoch in range(epochs):
        for xb, yb in loader:            # epoch_length batches of this rank's shard
            def loss():
                batch_loss = loss_fn(model(xb), yb)
                batch_loss.backward()
                return batch_loss
            opt.step(loss, full_closure=full_loss)
        # here the parameters hold y_{k+1}, the epoch's output

At the start of an epoch Katyusha X moves the parameters to ``x~_k`` (the extra line), so
between epochs they hold the answer ``y_k``. Steps need closures, so these optimizers are
not in :data:`mpidec.optim.ALGORITHMS` (``mpidec train`` drives backward-then-step
optimizers). They suit finite sums that fit a full pass per epoch (least squares, PCA-type
and regularized-Newton subproblems), not streaming deep-learning data, where the full
gradient is unaffordable and stale. Settings (``lr``, ``epoch_length``, ``tau``) are read
from the param groups at every step; all groups must share ``epoch_length``.
"""

from __future__ import annotations

import numbers

import torch
from torch.optim import Optimizer


def _check_group(group) -> None:
    """Clear errors for bad settings, at construction and at every epoch start."""
    lr, m = group["lr"], group["epoch_length"]
    if not (isinstance(lr, numbers.Real) and lr >= 0):
        raise ValueError(f"invalid lr {lr!r}: must be a number >= 0")
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
        raise ValueError(f"invalid epoch_length {m!r}: must be an integer >= 1 (inner steps per epoch, "
                         "e.g. shard size / batch size)")
    if "tau" in group:
        tau = group["tau"]
        if not (isinstance(tau, numbers.Real) and 0 < tau <= 1):
            raise ValueError(f"invalid tau {tau!r}: must be in (0, 1] (the paper's choice is "
                             "sqrt(epoch_length * lr * sigma) / 2); tau = 0 is not SVRG: use mpidec.optim.SVRG")


def _evaluate(closure, params, name: str):
    """Run ``closure`` with fresh gradients; return its loss and the gradients (zeros if none)."""
    for p in params:
        p.grad = None
    with torch.enable_grad():
        loss = closure()
    if loss is None:
        raise TypeError(f"{name} returned None: it must compute the loss, call backward() and return the loss")
    return loss, [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


class SVRG(Optimizer):
    """Mini-batch SVRG restarted each epoch (update rule, API and distribution: module docstring).

    ``lr``: eta; ``epoch_length``: m, the inner steps per epoch (one full gradient each);
    ``comm``: a :class:`mpidec.comm.Communicator` (default: MPI over the world).
    """

    def __init__(self, params, lr, *, epoch_length, comm=None):
        self._setup(params, dict(lr=lr, epoch_length=epoch_length), comm)

    def _setup(self, params, defaults, comm) -> None:
        _check_group(defaults)
        super().__init__(params, defaults)
        for group in self.param_groups:
            _check_group(group)
        if comm is None:
            from ..comm import MPICommunicator

            comm = MPICommunicator()
        self.comm = comm
        comm.check_same_shapes(self._params())
        self.inner_step = 0  # t: steps taken in the current epoch
        self.epochs = 0      # k: epochs completed

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _epoch_length(self) -> int:
        lengths = {group["epoch_length"] for group in self.param_groups}
        if len(lengths) > 1:
            raise ValueError(f"every param group must have the same epoch_length (one full gradient per epoch "
                             f"covers all parameters); got {sorted(lengths)}")
        return lengths.pop()

    @torch.no_grad()
    def step(self, closure, *, full_closure):
        """One inner step; at an epoch's first step, first the epoch start (full gradient).

        Returns the loss ``closure()`` gave at the current point (this rank's mini-batch).
        """
        if closure is None or full_closure is None:
            raise TypeError(f"{type(self).__name__}.step needs closure and full_closure (see the docstring)")
        if self.inner_step == 0:
            self._start_epoch(full_closure)
        params = self._params()
        loss, at_x = _evaluate(closure, params, "closure")
        current = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, [self.state[p]["snapshot"] for p in params])
        _, at_snapshot = _evaluate(closure, params, "closure")
        torch._foreach_copy_(params, current)
        correction = torch._foreach_sub(at_x, at_snapshot)
        self._average(correction)  # grad f_B(x) - grad f_B(x~), B over all ranks
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(correction[i].add_(self.state[p]["full_grad"]), alpha=-group["lr"])
                p.grad = at_x[i]
                i += 1
        self.inner_step += 1
        if self.inner_step >= self._epoch_length():
            self.inner_step, self.epochs = 0, self.epochs + 1
        return loss

    def _start_epoch(self, full_closure) -> None:
        """Move to the epoch's start point, snapshot it, and average the full gradient there."""
        for group in self.param_groups:
            _check_group(group)
        self._epoch_length()
        self._move_to_start()
        params = self._params()
        _, full = _evaluate(full_closure, params, "full_closure")
        self._average(full)  # mean over the shards: grad f(x~)
        for p, g in zip(params, full):
            state = self.state[p]
            state["snapshot"] = p.detach().clone()
            state["full_grad"] = g

    def _average(self, tensors) -> None:
        """Average over the ranks, in place (one fused allreduce; nothing to do on one rank)."""
        if self.comm.size > 1:
            self.comm.allreduce(tensors, average=True)

    def _move_to_start(self) -> None:
        """SVRG starts each epoch where the last one ended: ``x~_{k+1} = y_{k+1}``."""

    # -------------------------------------------------------------- checkpoints

    def state_dict(self):
        state = super().state_dict()
        state["inner_step"], state["epochs"] = self.inner_step, self.epochs
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        self.inner_step = state_dict.pop("inner_step", 0)
        self.epochs = state_dict.pop("epochs", 0)
        super().load_state_dict(state_dict)


class KatyushaX(SVRG):
    """Katyusha X: SVRG plus the momentum line at every epoch start (module docstring).

    ``tau``: the momentum parameter in (0, 1]; the paper takes ``sqrt(epoch_length * lr * sigma) / 2``
    with sigma the strong convexity of the average f.
    """

    def __init__(self, params, lr, *, epoch_length, tau, comm=None):
        self._setup(params, dict(lr=lr, epoch_length=epoch_length, tau=tau), comm)

    def _move_to_start(self) -> None:
        """``x~_{k+1} = (3/2 y_{k+1} + 1/2 x~_k - (1 - tau) y_k) / (1 + tau)``; y_0 = x~_0 = x_0."""
        for group in self.param_groups:
            tau = group["tau"]
            for p in group["params"]:
                state = self.state[p]
                if "previous_output" not in state:  # the first epoch starts at x_0
                    state["previous_output"] = p.detach().clone()
                    continue
                y_prev = state["previous_output"]
                start = (1.5 * p + 0.5 * state["snapshot"] - (1 - tau) * y_prev) / (1 + tau)
                y_prev.copy_(p)
                p.copy_(start)
