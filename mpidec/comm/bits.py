"""Signs as bits: 1 bit per element, packed 8 to a byte on the tensor's own device.

``pack_signs(x)`` sets bit k of byte b when ``x[8 b + k] >= 0`` (zero counts as +), the
last byte padded with zero bits; ``unpack_signs(packed, n)`` gives back +1/-1 floats.
Majority vote over workers (``vote``) counts the set bits per position.
"""

from __future__ import annotations

import torch

_SHIFTS = {}


def _shifts(device) -> torch.Tensor:
    if device not in _SHIFTS:
        _SHIFTS[device] = torch.arange(8, dtype=torch.uint8, device=device)
    return _SHIFTS[device]


def packed_size(n: int) -> int:
    """Bytes that hold n signs."""
    return (n + 7) // 8


def pack_signs(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x >= 0`` as bits, 8 per byte (uint8 tensor of ``packed_size(x.numel())`` bytes)."""
    flat = x.reshape(-1)
    bits = torch.zeros(packed_size(flat.numel()) * 8, dtype=torch.uint8, device=flat.device)
    bits[: flat.numel()] = flat >= 0
    packed = (bits.view(-1, 8) << _shifts(flat.device)).sum(dim=1, dtype=torch.uint8)
    if out is None:
        return packed
    return out.copy_(packed)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first n bits of ``packed`` (any leading shape) as uint8 0/1, shape ``(..., n)``."""
    bits = (packed.unsqueeze(-1) >> _shifts(packed.device)) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :n]


def unpack_signs(packed: torch.Tensor, n: int, dtype=torch.float32) -> torch.Tensor:
    """+1 where the bit is set, -1 where it is not."""
    return unpack_bits(packed, n).to(dtype).mul_(2).sub_(1)


def vote(packed_per_worker: torch.Tensor, n: int, offset: int = 0) -> torch.Tensor:
    """Majority vote of the workers' packed signs (rows), packed.

    ``sign(sum_i s_i)`` per position; a tie (even number of workers) votes +1 at even
    global positions and -1 at odd ones (``offset`` is the global position of bit 0), a
    rule every rank computes alike and that adds no drift in either direction.
    """
    workers = packed_per_worker.shape[0]
    ones = unpack_bits(packed_per_worker, n).sum(dim=0, dtype=torch.int32)
    twice = 2 * ones
    positions = torch.arange(offset, offset + n, device=ones.device)
    plus = (twice > workers) | ((twice == workers) & (positions % 2 == 0))
    return pack_signs(plus.to(torch.int8) * 2 - 1)
