"""Torch tensors as mpi4py sees them: raw bytes, any dtype, no pickling, no copies."""

from __future__ import annotations

import torch


def as_mpi_bytes(t: torch.Tensor, rows: int = 1):
    """An mpi4py buffer spec for a contiguous tensor: ``[memory, bytes per row, BYTE]``."""
    from mpi4py import MPI

    raw = t.reshape(-1).view(torch.uint8)
    memory = raw if raw.is_cuda else raw.numpy()
    return [memory, raw.numel() // max(rows, 1), MPI.BYTE]
