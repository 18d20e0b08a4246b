"""Overlapping communication with backward: parameter buckets launched from gradient hooks.

Parameters are cut into buckets of about ``bucket_bytes``, last parameters first (the
order in which backward produces their gradients, as in DDP and Horovod). When every
parameter of a bucket has its gradient, the optimizer's local part for that bucket runs
and its exchange starts, while backward goes on with earlier layers; ``step()`` launches
what is left, waits, and finishes.

Buckets launch strictly in bucket order, so every rank starts its collectives in the
same order whatever the order its hooks fire in: a ready bucket waits for the ones
before it.
"""

from __future__ import annotations

import weakref


class Bucket:
    """Parameters (with their groups) that are exchanged together."""

    def __init__(self, pairs):
        self.pairs = pairs                       # [(param, group)]
        self.expected = {id(p) for p in self.params_needing_grad()}
        self.ready: set = set()
        self.handle = None                       # the exchange in flight, once launched
        self.launched = False

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


class Launcher:
    """Launches buckets in order: from gradient hooks as they become ready (``hooks=True``),
    and whatever is left when ``step()`` asks for everything.

    ``launch`` (a bound method) is held weakly: hooks of an optimizer that no longer
    exists do nothing, so a new optimizer can take over the same parameters.
    """

    def __init__(self, buckets, launch, hooks: bool):
        self._buckets = buckets
        self._launch = weakref.WeakMethod(launch)
        self._next = 0  # the first bucket not launched yet
        self._bucket_of = {id(p): b for b in buckets for p, _ in b.pairs}
        if hooks:
            for b in buckets:
                for p in b.params_needing_grad():
                    p.register_post_accumulate_grad_hook(self._on_grad)

    def _on_grad(self, p) -> None:
        if self._launch() is None:
            return
        bucket = self._bucket_of[id(p)]
        if bucket.launched or id(p) in bucket.ready:
            raise RuntimeError("a gradient was accumulated twice before step(): with overlap=True call "
                               "step() after every backward (or build the optimizer with overlap=False "
                               "to accumulate gradients over several backward passes)")
        bucket.ready.add(id(p))
        self.launch_ready()

    def launch_ready(self, everything: bool = False) -> None:
        """Launch buckets in order while the next one is ready (all of them with ``everything``)."""
        while self._next < len(self._buckets):
            bucket = self._buckets[self._next]
            if not (everything or bucket.ready >= bucket.expected):
                return
            self._launch()(bucket)
            bucket.launched = True
            self._next += 1

    def reset(self) -> None:
        for bucket in self._buckets:
            bucket.ready.clear()
            bucket.launched, bucket.handle = False, None
        self._next = 0

