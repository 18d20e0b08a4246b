"""Buckets of parameters, and starting their exchanges during backward.

Parameters are cut into buckets of about ``bucket_bytes``, last parameters first (the
order in which backward produces their gradients, as in DDP and Horovod). ``step()`` runs
the buckets as a pipeline: a bucket's exchange is in flight while the next bucket's local
part is computed.

:class:`BackwardOverlap` starts exchanges from gradient hooks, for an algorithm whose
result *is* what backward should leave behind (PmSGD: the averaged gradient, as DDP
does): when every parameter of a bucket has its gradient, the bucket's exchange starts
while backward goes on with earlier layers, and autograd's end-of-backward callback
starts the rest and waits, so that ``backward()`` returns with the exchanges complete.
Buckets launch strictly in bucket order, so every rank starts its collectives in the
same order whatever the order its hooks fire in: a ready bucket waits for the ones
before it.
"""

from __future__ import annotations

import contextlib
import weakref

import torch


class Bucket:
    """Parameters (with their groups) that are exchanged together."""

    def __init__(self, pairs):
        self.pairs = pairs                       # [(param, group)]
        self.expected = {id(p) for p in self.params_needing_grad()}
        self.ready: set = set()
        self.tensors: list = []                  # what the bucket exchanges this step
        self.handle = None                       # the exchange in flight, once launched

    def params_needing_grad(self) -> list:
        """The parameters whose gradients the bucket waits for."""
        return [p for p, _ in self.pairs if p.requires_grad]


def make_buckets(pairs, bucket_bytes: int) -> list[Bucket]:
    """Cut ``pairs`` (parameter order) into buckets, last parameters first."""
    buckets, current, size = [], [], 0
    for p, group in reversed(pairs):
        current.append((p, group))
        size += p.numel() * p.element_size()
        if size >= bucket_bytes:
            buckets.append(Bucket(current[::-1]))
            current, size = [], 0
    if current:
        buckets.append(Bucket(current[::-1]))
    return buckets


class BackwardOverlap:
    """Calls ``launch(bucket)`` from gradient hooks as buckets become ready, in bucket order,
    and ``finish()`` at the end of each backward pass, after launching what is left.

    ``launch`` and ``finish`` (bound methods of the optimizer) are held weakly: hooks of an
    optimizer that no longer exists do nothing, so a new optimizer can take over the same
    parameters. Inside :meth:`paused` hooks do nothing (gradient accumulation without
    communication, like DDP's ``no_sync``).
    """

    def __init__(self, buckets, launch, finish):
        self._buckets = buckets
        self._launch = weakref.WeakMethod(launch)
        self._finish = weakref.WeakMethod(finish)
        self._bucket_of = {id(p): b for b in buckets for p, _ in b.pairs}
        self._next = 0              # the first bucket not launched in this backward pass
        self._pending = False       # a finish is queued for the end of this backward pass
        self._paused = False
        for b in buckets:
            for p in b.params_needing_grad():
                p.register_post_accumulate_grad_hook(self._on_grad)

    @contextlib.contextmanager
    def paused(self):
        previous, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = previous

    def _on_grad(self, p) -> None:
        if self._paused or self._launch() is None:
            return
        if not self._pending:
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
            self._pending = True
        self._bucket_of[id(p)].ready.add(id(p))
        self._launch_ready()

    def _launch_ready(self, everything: bool = False) -> None:
        """Launch buckets in order while the next one is ready (all of them with ``everything``)."""
        while self._next < len(self._buckets):
            bucket = self._buckets[self._next]
            if not (everything or bucket.ready >= bucket.expected):
                return
            self._launch()(bucket)
            self._next += 1

    def _end_of_backward(self) -> None:
        self._pending = False
        finish = self._finish()
        if finish is None:
            return
        self._launch_ready(everything=True)   # parameters that got no gradient in this pass
        finish()
        for bucket in self._buckets:
            bucket.ready.clear()
        self._next = 0


def by_group(pairs, with_grad: bool = False) -> list:
    """``[(group, [params])]`` of a bucket's ``(param, group)`` pairs, groups in order; only
    the parameters that have a gradient with ``with_grad``."""
    groups = {}
    for p, group in pairs:
        if p.grad is not None or not with_grad:
            groups.setdefault(id(group), (group, []))[1].append(p)
    return list(groups.values())
