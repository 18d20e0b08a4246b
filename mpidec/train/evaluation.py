"""Test-set evaluation of each worker's model and of the averaged model.

The averaged model ``xbar = (1/n) sum_i x_i`` (parameters and floating-point buffers
such as BatchNorm statistics) is what a decentralized run would deploy; it is the same on
every rank, so each rank evaluates it on a slice of the test set and the sums are reduced.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from .batches import batches


@torch.no_grad()
def score(model, dataset, order, batch_size: int, device, workers: int = 0, halt=None) -> tuple[float, int, int] | None:
    """``(summed loss, correct predictions, samples)`` of ``model`` on ``dataset[order]``;
    None when ``halt()`` turns true before the last batch (a stop request)."""
    was_training = model.training
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for images, labels in batches(dataset, order, batch_size, workers=workers, pin_memory=device.type == "cuda"):
        if halt is not None and halt():
            model.train(was_training)
            return None
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = model(images)
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
        count += len(labels)
    model.train(was_training)
    return loss, correct, count


def averaged_model(model, comm, into=None):
    """A copy of ``model`` holding the average over ranks of its floating-point state (collective).

    ``into``: a model of the same architecture to overwrite instead of making a new copy.
    """
    into = into if into is not None else copy.deepcopy(model)
    into.load_state_dict(model.state_dict())
    comm.allreduce([t for t in into.state_dict().values() if t.is_floating_point()])
    return into


def rank_slice(num_samples: int, world_size: int, rank: int) -> np.ndarray:
    """Rank ``rank``'s contiguous slice of ``range(num_samples)`` (the slices cover it exactly once)."""
    return np.array_split(np.arange(num_samples), world_size)[rank]
