"""One message per dtype and device, and the weighted combine.

An exchange sends this rank's tensors as one contiguous 1-D buffer ``x`` of ``N``
elements: a lone contiguous tensor as it is (an optimizer's flat buffer, no copy), several
tensors packed end to end. ``R`` of shape ``(k, N)`` receives the same layout from the
``k`` in-neighbours, and the neighbour average is one matrix-vector product

    x_i  <-  sum_j W[i, j] x_j  =  W[i, i] x + R^T w_n,      w_n = (W[i, j_1], ..., W[i, j_k])

written straight into ``x`` (one read of the ``k + 1`` rows, one write) or, for packed
tensors, into a buffer unpacked into them. Extra memory: ``k N`` elements (plus ``N`` when
packing).
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


def flat_view(tensors) -> torch.Tensor | None:
    """The 1-D view of a lone contiguous tensor (sent and combined in its own memory), else None."""
    if len(tensors) == 1 and tensors[0].is_contiguous():
        return tensors[0].detach().view(-1)
    return None


def combine(own: torch.Tensor, received: torch.Tensor, w0: float, wn: torch.Tensor, out: torch.Tensor) -> None:
    """``out <- w0 own + received^T wn``: the neighbour average of 1-D ``own`` and the ``(k, N)``
    rows ``received``, one pass (``out`` may be ``own``). ``received.t()`` is a column-major
    view: BLAS reads the rows side by side, without temporaries."""
    torch.addmv(own, received.t(), wn, beta=w0, out=out)


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


WIRE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def as_wire_dtype(value):
    """``wire_dtype`` as a torch dtype (None stays None), or a ValueError naming the choices."""
    if value is None or value in WIRE_DTYPES.values():
        return value
    if isinstance(value, str) and value.removeprefix("torch.") in WIRE_DTYPES:
        return WIRE_DTYPES[value.removeprefix("torch.")]
    raise ValueError(f"invalid wire_dtype {value!r}: use one of {', '.join(WIRE_DTYPES)} (or the torch dtype)")
