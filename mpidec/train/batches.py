"""Batches of a list of sample indices, reproducible from any position.

``batches(dataset, order, batch_size, start=k)`` yields the batches of ``order`` from the
``k``-th on: a resumed run skips the batches it already took without loading them.
Random augmentation is seeded per sample by ``(seed, epoch, index)`` rather than drawn
from a shared stream, so a sample looks the same whatever the number of loader processes
and wherever the run was resumed; the loaders do not draw from the global generator, so
where a resumed run opens them does not change its random numbers (dropout, ...).
"""

from __future__ import annotations

import signal

import numpy as np
import torch

from .data import TensorSamples


class _SeededSamples(torch.utils.data.Dataset):
    """``dataset[index]`` under ``torch.manual_seed(sample_seed)``, for keys ``(index, sample_seed)``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, sample_seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.dataset[index]


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader processes share the rank's process group: a SIGTERM or SIGINT meant for the rank
    (Ctrl-C, ``timeout``, SLURM, Open MPI's launcher) would kill them and then the rank's next
    batch. The rank decides when to stop; they end with it."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 100_000_007 + index) % (2**63)


def batches(dataset, order, batch_size: int, start: int = 0, seed: int = 0, epoch: int = 0, workers: int = 0,
            pin_memory: bool = False):
    """Yield ``(images, labels)`` for ``order[b*B:(b+1)*B]``, ``b = start, start+1, ...``
    (the last batch may be short). ``workers`` loader processes, ``pin_memory`` for GPUs."""
    order = np.asarray(order)[start * batch_size:]
    if isinstance(dataset, TensorSamples):
        for i in range(0, len(order), batch_size):
            index = torch.from_numpy(order[i:i + batch_size])
            yield dataset.images[index], dataset.labels[index]
        return
    keys = [(int(i), sample_seed(seed, epoch, int(i))) for i in order]
    loader = torch.utils.data.DataLoader(
        _SeededSamples(dataset), batch_sampler=[keys[i:i + batch_size] for i in range(0, len(keys), batch_size)],
        num_workers=workers, pin_memory=pin_memory, worker_init_fn=_ignore_stop_signals if workers else None,
        generator=torch.Generator())  # its worker seed is unused; the global generator stays untouched
    yield from loader
