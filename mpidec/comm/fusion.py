"""Fusing a list of tensors into one contiguous buffer, and the fused weighted combine.

An exchange works on a 2-D buffer ``M`` of shape ``(k + 1, N)``: row 0 holds this
rank's tensors laid end to end (``N`` elements), rows ``1..k`` receive the same layout
from the ``k`` in-neighbours. The neighbour average is then one matrix-vector product

    x_i  <-  sum_j W[i, j] x_j  =  w @ M,      w = (W[i, i], W[i, j_1], ..., W[i, j_k])

written straight back into the original tensors: one pass to pack, one to combine,
and at most ``(k + 1) N`` elements of extra memory.
"""

from __future__ import annotations

from collections import defaultdict

import torch


def groups(tensors) -> list[list[torch.Tensor]]:
    """Group tensors that can share one buffer (same dtype and device), keeping the order
    of the tensors within each group; tensors of one kind need not be adjacent."""
    by_kind = defaultdict(list)
    for t in tensors:
        by_kind[(t.dtype, t.device)].append(t)
    return list(by_kind.values())


def numel(tensors) -> int:
    return sum(t.numel() for t in tensors)


def pack(tensors, out: torch.Tensor) -> torch.Tensor:
    """Copy ``tensors`` end to end into the 1-D tensor ``out`` (one pass)."""
    torch.cat([t.detach().reshape(-1) for t in tensors], out=out)
    return out


def unpack(flat: torch.Tensor, tensors) -> None:
    """Copy the 1-D tensor ``flat`` back into ``tensors`` (inverse of :func:`pack`)."""
    offset = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def combine_into(tensors, m: torch.Tensor, w: torch.Tensor) -> None:
    """``t <- w @ M[:, slice of t]`` for every tensor: the neighbour average, in place.

    ``M[:, a:b].t()`` is a column-major view, so ``torch.mv`` reads the ``k + 1`` rows
    in one pass and writes into the tensor's own storage without temporaries.
    """
    offset = 0
    with torch.no_grad():
        for t in tensors:
            block = m[:, offset:offset + t.numel()].t()
            if t.is_contiguous():
                torch.mv(block, w, out=t.view(-1))
            else:
                t.copy_(torch.mv(block, w).view_as(t))
            offset += t.numel()


class BufferPool:
    """Reuses exchange buffers so that a training loop allocates nothing in steady state.

    A buffer is taken for the life of one exchange (while MPI may still read or write it)
    and given back when the exchange is waited on.
    """

    def __init__(self, pin_memory: bool = False):
        self._free = defaultdict(list)
        self._pin = pin_memory
        self.allocations = 0      # buffers created so far: flat in steady state
        self.allocated_bytes = 0  # their total size: the extra memory of the exchanges

    def take(self, shape, dtype, device) -> torch.Tensor:
        key = (tuple(shape), dtype, torch.device(device))
        if self._free[key]:
            return self._free[key].pop()
        pin = self._pin and key[2].type == "cpu" and torch.cuda.is_available()
        buf = torch.empty(shape, dtype=dtype, device=device, pin_memory=pin)
        self.allocations += 1
        self.allocated_bytes += buf.numel() * buf.element_size()
        return buf

    def give(self, buf: torch.Tensor) -> None:
        self._free[(tuple(buf.shape), buf.dtype, buf.device)].append(buf)
