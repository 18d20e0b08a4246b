"""Compressors for compressed gossip: ``Q(x)`` of a flat tensor and its byte payload.

A compressor turns a 1-D tensor ``x`` (one parameter's difference, in CHOCO-SGD) into a
``uint8`` payload of a size fixed by ``(numel, dtype)`` alone, so that every rank sends
rows of the same size through a neighbourhood allgather; ``decode_add_`` adds
``alpha * Q(x)`` to a tensor from the payload. Only the payload travels:

=============  ============================================  =============================  ====================
name           Q(x)                                          payload                        property (checked)
=============  ============================================  =============================  ====================
``identity``   x                                             N values                       exact
``top_k``      x on its k largest ``|x_l|``, 0 elsewhere     k values + k int32 indices     ``||Q(x)-x||^2 <= (1-k/N) ||x||^2``
``random_k``   x on k random positions, 0 elsewhere          k values (shared seed: the     ``E||Q(x)-x||^2 = (1-k/N) ||x||^2``
                                                             indices do not travel)
``sign``       ``(||x||_1 / N) sign(x)``                     N bits + 1 scale               ``||Q(x)-x||^2 = ||x||^2 - ||x||_1^2/N``
``int8``       ``s * floor(x / s + u)``, ``s = max|x|/127``,  N int8 + 1 float32 scale       ``E Q(x) = x``,
               ``u ~ U[0, 1)`` per element                                                  ``E||Q(x)-x||^2 <= N s^2 / 4``
=============  ============================================  =============================  ====================

``k = ceil(ratio * N)`` (at least 1). ``sign(0)`` counts as +1 (:mod:`mpidec.comm.bits`).
Randomness comes from a ``key`` (a tuple of integers the caller derives from its seed,
the step and the tensor's index): ``random_k`` draws its indices from the key alone, so
sender and receivers draw the same ones; ``int8`` draws its rounding from the key and the
sender's rank (independent noise per rank), and its receivers need no randomness. Every
compressor is therefore a function of ``(x, key, rank)``: runs are reproducible, and MPI
runs equal simulated ones bit for bit. Pure torch, no communication.
"""

from __future__ import annotations

import math

import torch

from . import bits

_SCALE_DTYPE = torch.float32  # int8's scale travels as float32 whatever the tensor's dtype


def _view(raw: torch.Tensor, dtype) -> torch.Tensor:
    """The bytes ``raw`` as ``dtype`` (copied first when they are not aligned for it)."""
    size = torch.empty((), dtype=dtype).element_size()
    if raw.storage_offset() % size:
        raw = raw.clone()
    return raw.view(dtype)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def _generator(key) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (the same on every rank for the same key)."""
    seed = 0x9E3779B97F4A7C15
    for part in key:
        seed = (seed * 6364136223846793005 + int(part) + 1442695040888963407) % 2**63
    return torch.Generator().manual_seed(seed)


class Compressor:
    """``Q``: see the module docstring. ``ratio`` matters to the sparsifiers only."""

    name = ""
    deterministic = True  # Q(x) is a function of x alone

    def __init__(self, ratio: float = 1.0):
        self.ratio = ratio

    def nbytes(self, numel: int, dtype) -> int:
        """Size of the payload of an ``numel``-element tensor of ``dtype``."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, key=(), rank: int = 0) -> torch.Tensor:
        """The payload of ``Q(x)`` (``uint8``, ``nbytes(x.numel(), x.dtype)`` bytes)."""
        raise NotImplementedError

    def decode_add_(self, payload: torch.Tensor, out: torch.Tensor, alpha: float = 1.0, key=()) -> None:
        """``out += alpha * Q(x)`` for the ``x`` whose payload this is (``out`` 1-D, x's dtype)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, key=(), rank: int = 0) -> torch.Tensor:
        """``Q(x)`` as a dense tensor (through the payload, as a receiver sees it)."""
        flat = x.reshape(-1)
        out = torch.zeros_like(flat)
        self.decode_add_(self.encode(flat, key, rank), out, 1.0, key)
        return out.view_as(x)

    def k(self, numel: int) -> int:
        return max(1, min(numel, math.ceil(self.ratio * numel)))

    def __repr__(self):
        return f"{type(self).__name__}(ratio={self.ratio})" if self.name.endswith("_k") else type(self).__name__


class Identity(Compressor):
    name = "identity"

    def nbytes(self, numel, dtype):
        return numel * torch.empty((), dtype=dtype).element_size()

    def encode(self, x, key=(), rank=0):
        return _bytes(x)

    def decode_add_(self, payload, out, alpha=1.0, key=()):
        out.add_(_view(payload, out.dtype), alpha=alpha)


class TopK(Compressor):
    name = "top_k"

    def nbytes(self, numel, dtype):
        return self.k(numel) * (torch.empty((), dtype=dtype).element_size() + 4)

    def encode(self, x, key=(), rank=0):
        index = torch.topk(x.abs(), self.k(x.numel()), sorted=False).indices
        return torch.cat([_bytes(x[index]), _bytes(index.to(torch.int32))])

    def decode_add_(self, payload, out, alpha=1.0, key=()):
        k = self.k(out.numel())
        split = k * out.element_size()
        index = _view(payload[split:], torch.int32).long()
        out.index_add_(0, index, _view(payload[:split], out.dtype), alpha=alpha)


class RandomK(Compressor):
    name = "random_k"

    def nbytes(self, numel, dtype):
        return self.k(numel) * torch.empty((), dtype=dtype).element_size()

    def _index(self, numel, key, device):
        return torch.randperm(numel, generator=_generator(key))[: self.k(numel)].to(device)

    def encode(self, x, key=(), rank=0):
        return _bytes(x[self._index(x.numel(), key, x.device)])

    def decode_add_(self, payload, out, alpha=1.0, key=()):
        out.index_add_(0, self._index(out.numel(), key, out.device), _view(payload, out.dtype), alpha=alpha)


class ScaledSign(Compressor):
    name = "sign"

    def nbytes(self, numel, dtype):
        return torch.empty((), dtype=dtype).element_size() + bits.packed_size(numel)

    def encode(self, x, key=(), rank=0):
        scale = x.abs().mean(dtype=torch.float64).to(x.dtype).reshape(1)  # float64 sum: no fp16 overflow
        return torch.cat([_bytes(scale), bits.pack_signs(x)])

    def decode_add_(self, payload, out, alpha=1.0, key=()):
        size = out.element_size()
        scale = _view(payload[:size], out.dtype)
        out.add_(bits.unpack_signs(payload[size:], out.numel(), out.dtype).mul_(scale), alpha=alpha)


class StochasticInt8(Compressor):
    name = "int8"
    deterministic = False  # random rounding: unbiased, from (key, rank)

    def nbytes(self, numel, dtype):
        return 4 + numel

    def encode(self, x, key=(), rank=0):
        work = x.double() if x.dtype == torch.float64 else x.float()
        scale = (work.abs().max() / 127).to(_SCALE_DTYPE)
        scale = torch.nextafter(scale, torch.full_like(scale, math.inf))  # rounded up: |x / scale| <= 127
        u = torch.rand(x.numel(), generator=_generator((*key, rank)), dtype=work.dtype).to(x.device)
        v = work / scale.to(work.dtype) if scale > 0 else torch.zeros_like(work)
        q = torch.floor(v + u).clamp_(-127, 127).to(torch.int8)
        return torch.cat([_bytes(scale.reshape(1)), _bytes(q)])

    def decode_add_(self, payload, out, alpha=1.0, key=()):
        scale = _view(payload[:4], _SCALE_DTYPE).to(out.dtype)
        out.add_(_view(payload[4:], torch.int8).to(out.dtype).mul_(scale), alpha=alpha)


COMPRESSORS = {cls.name: cls for cls in (Identity, TopK, RandomK, ScaledSign, StochasticInt8)}


def make(name: str, ratio: float = 1.0) -> Compressor:
    """The compressor called ``name`` (see ``COMPRESSORS``), with a clear error otherwise."""
    if name not in COMPRESSORS:
        raise ValueError(f"unknown compressor {name!r}; choose one of {', '.join(COMPRESSORS)}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"invalid ratio {ratio}: the fraction of elements kept must be in (0, 1]")
    return COMPRESSORS[name](ratio)
