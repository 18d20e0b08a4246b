"""Which training samples each rank sees, epoch by epoch.

Every rank computes every rank's share from the seed alone (no communication), and every
rank takes the same number of steps per epoch (the exchanges are collective):
``samples_per_rank = num_samples // world_size``, rounded down to whole batches.

- ``iid``: one global permutation per epoch, drawn from ``(seed, epoch)``; rank ``r``
  takes the ``r``-th contiguous block. Shares are disjoint and reshuffled every epoch.
- ``label_sorted``: samples sorted by label (stable), cut into ``world_size`` contiguous
  blocks: each rank sees one or two classes (the most heterogeneous split).
- ``dirichlet``: for each class, the fractions going to the ranks are drawn from
  ``Dirichlet(alpha)`` (Hsu et al. 2019): small ``alpha`` gives each rank few classes,
  large ``alpha`` approaches ``iid``.

The two fixed splits keep each rank's share for the whole run; within an epoch a rank
visits its share in a fresh order drawn from ``(seed, epoch, rank)``, cycling through it
when it is smaller than ``samples_per_rank`` (Dirichlet shares differ in size).
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("iid", "label_sorted", "dirichlet")
_SHARES, _ORDER = 1, 2  # stream tags: keep the random streams of different uses apart


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def iid_order(num_samples: int, world_size: int, rank: int, seed: int, epoch: int) -> np.ndarray:
    """Rank ``rank``'s block of the global permutation of epoch ``epoch``."""
    per_rank = num_samples // world_size
    permutation = _rng(seed, epoch).permutation(num_samples)
    return permutation[rank * per_rank:(rank + 1) * per_rank]


def label_sorted_shares(labels, world_size: int) -> list[np.ndarray]:
    """Contiguous blocks of the label-sorted indices (the last rank takes the remainder)."""
    order = np.argsort(np.asarray(labels), kind="stable")
    return np.array_split(order, world_size)


def dirichlet_shares(labels, world_size: int, alpha: float, seed: int, max_draws: int = 100) -> list[np.ndarray]:
    """Each class split over the ranks by fractions drawn from ``Dirichlet(alpha)``.

    Draws again (from the same stream, so deterministically) while some rank gets no sample;
    raises ``ValueError`` after ``max_draws`` tries.
    """
    labels = np.asarray(labels)
    rng = _rng(seed, _SHARES)
    classes = np.unique(labels)
    for _ in range(max_draws):
        shares = [[] for _ in range(world_size)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(world_size, alpha)))[:-1] * len(members)).astype(int)
            for rank, part in enumerate(np.split(members, cuts)):
                shares[rank].append(part)
        shares = [np.sort(np.concatenate(parts)) for parts in shares]
        if all(len(s) for s in shares):
            return shares
    raise ValueError(f"Dirichlet(alpha={alpha}) left a rank without samples in {max_draws} draws: "
                     "raise --alpha or use fewer ranks")


def share_order(share: np.ndarray, length: int, seed: int, epoch: int, rank: int) -> np.ndarray:
    """``length`` indices from ``share``: fresh permutations of it, one after another."""
    rng = _rng(seed, _ORDER, epoch, rank)
    passes = -(-length // len(share))
    return np.concatenate([rng.permutation(share) for _ in range(passes)])[:length]


class Partition:
    """The samples of one rank: ``epoch_order(epoch)`` lists ``samples_per_rank`` indices."""

    def __init__(self, labels, world_size: int, rank: int, scheme: str = "iid", seed: int = 0,
                 alpha: float = 0.5, batch_size: int = 1):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown partition {scheme!r}; use one of {', '.join(SCHEMES)}")
        labels = np.asarray(labels)
        self.num_samples, self.world_size, self.rank = len(labels), world_size, rank
        self.scheme, self.seed = scheme, seed
        self.steps_per_epoch = len(labels) // world_size // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(labels)} training samples over {world_size} ranks do not fill one batch of "
                             f"{batch_size} per rank: lower --batch-size")
        self.samples_per_rank = self.steps_per_epoch * batch_size
        self.share = None  # this rank's fixed share (label_sorted, dirichlet); None for iid
        if scheme == "label_sorted":
            self.share = label_sorted_shares(labels, world_size)[rank]
        elif scheme == "dirichlet":
            self.share = dirichlet_shares(labels, world_size, alpha, seed)[rank]

    def epoch_order(self, epoch: int) -> np.ndarray:
        if self.share is None:
            return iid_order(self.num_samples, self.world_size, self.rank, self.seed, epoch)[:self.samples_per_rank]
        return share_order(self.share, self.samples_per_rank, self.seed, epoch, self.rank)
