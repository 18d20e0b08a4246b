"""CHOCO-SGD: decentralized SGD with compressed gossip (Koloskova, Stich & Jaggi 2019)."""

from __future__ import annotations

import torch

from ..comm import compress
from ..comm.base import Handle
from ..topology import Topology, TopologyError
from .base import DecentralizedOptimizer
from .buckets import by_group


class CHOCO(DecentralizedOptimizer):
    r"""CHOCO-SGD: only compressed differences travel, with error feedback through public copies.

    In its memory-efficient form (Koloskova, Stich & Jaggi 2019, Alg. 1 and its appendix),
    with the local momentum step of the deep-learning experiments (Koloskova, Lin, Stich &
    Jaggi 2020)::

        M    = beta M + G ;  X' = X - lr M      (DmSGD's local step; Nesterov: X - lr (G + beta M))
        Q    = Q(X' - Xhat)                     (row i: worker i's compressed difference: sent)
        Xhat = Xhat + Q                         (the public copies: row i is held by i and its neighbours)
        S    = S + W Q                          (S = W Xhat, kept up to date without storing Xhat_j)
        X+   = X' + gamma (S - Xhat)

    ``Xhat`` and ``S`` start at zero. The difference ``X' - Xhat`` is what the compressions
    so far left out (error feedback): nothing is lost, it is sent later. With the
    ``identity`` compressor ``Xhat = X'`` and ``S = W X'``, so ``X+ = ((1 - gamma) I + gamma W) X'``:
    DSGD (DmSGD) on the lazier mixing matrix, and exactly DSGD for ``gamma = 1``.

    Options (in the param groups, read at each step): ``compressor`` (``identity``,
    ``top_k``, ``random_k``, ``sign``, ``int8``: :mod:`mpidec.comm.compress`), ``ratio``
    (the fraction the sparsifiers keep: ``k = ceil(ratio * numel)`` per parameter), ``gamma``
    (the consensus step size, in (0, 1]; the compressed runs need it below 1: about 0.5 for
    ``sign`` and ``int8``, 0.1 to 0.3 for ``top_k`` at 1%), ``seed`` (random-k's shared index
    stream and int8's rounding; the same on every rank).

    Each parameter is compressed on its own (a scale or ``k`` per tensor); a bucket's
    payloads travel as one byte row through
    :meth:`mpidec.comm.Communicator.neighbor_allgather_async`, of a size fixed by the shapes,
    so every rank sends the same number of bytes (``last_step_bytes``: its payload times its
    out-degree, as counted at the transport). The topology must be static (``S = W Xhat``
    needs the same ``W`` at every step). State: momentum, ``Xhat`` and ``S`` (2 models). The consensus estimate is
    ``||X' - S||`` (DSGD's for the identity); consensus control and ``wire_dtype`` do not apply.
    """

    exchange = "compressed_gossip"  # _start_exchange below; estimates_consensus as the base
    options = {"compressor": "top_k", "ratio": 0.01, "gamma": 0.2, "seed": 0}

    def __init__(self, params, lr, *, topology=None, **kwargs):
        if topology is not None and not isinstance(topology, Topology):
            raise TopologyError(f"CHOCO keeps S = W Xhat from step to step: it needs a static topology, "
                                f"and {topology.name!r} changes with the step; use e.g. ring or exponential")
        if kwargs.get("consensus_control") is not None:
            raise ValueError("CHOCO takes no consensus_control: its gossip is the compressed one (tune gamma)")
        if kwargs.get("wire_dtype") is not None:
            raise ValueError("CHOCO takes no wire_dtype: its compressor decides what travels")
        super().__init__(params, lr, topology=topology, **kwargs)
        me = self.comm.rank
        self._sources = self.topology.in_neighbors(me)
        self._self_weight = float(self.topology.W[me, me])
        self._weights = [float(self.topology.W[me, j]) for j in self._sources]
        self._index = {p: i for i, p in enumerate(self.params)}

    def _check_group(self, group):
        super()._check_group(group)
        compress.make(group["compressor"], group["ratio"])  # raises ValueError naming what to change
        if not 0.0 < group["gamma"] <= 1.0:
            raise ValueError(f"invalid gamma {group['gamma']}: the consensus step size must be in (0, 1]")
        if not isinstance(group["seed"], int):
            raise ValueError(f"invalid seed {group['seed']!r}: must be an integer")

    # -------------------------------------------------------------- the update rule

    def _before(self, pairs):
        self._local_sgd_step(pairs)                                        # p = X'

    def _start_exchange(self, bucket):
        """Compress every parameter's ``X' - Xhat``, apply the own ``Q`` to ``Xhat`` and ``S``,
        and send the payloads; the handle adds the neighbours' ``W_ij Q_j`` to ``S``."""
        parts, payloads = [], []
        for p, group in bucket.pairs:
            q = compress.make(group["compressor"], group["ratio"])
            key = (group["seed"], self.steps, self._index[p])
            public, mixed = self._flat(p, "public"), self._flat(p, "mixed")
            payload = q.encode(p.detach().reshape(-1) - public, key, self.comm.rank)
            q.decode_add_(payload, public, 1.0, key)
            q.decode_add_(payload, mixed, self._self_weight, key)
            parts.append((p, q, key, payload.numel()))
            payloads.append(payload)
        wire = torch.cat(payloads)
        handle = self.comm.neighbor_allgather_async(wire, self.topology, self.steps)

        def finish():
            rows = handle.wait()
            for row, w in zip(rows, self._weights):
                offset = 0
                for p, q, key, size in parts:
                    q.decode_add_(row[offset:offset + size], self._flat(p, "mixed"), w, key)
                    offset += size
            if not self.measure_consensus:
                return None
            return sum(float(torch.linalg.vector_norm(p.detach().reshape(-1) - self._flat(p, "mixed"))) ** 2
                       for p, _, _, _ in parts)

        return Handle(finish)

    def _after(self, pairs):
        for group, params in by_group(pairs):
            pulls = torch._foreach_sub([self._buffer(p, "mixed") for p in params],
                                       [self._buffer(p, "public") for p in params])
            torch._foreach_add_(params, pulls, alpha=group["gamma"])     # X+ = X' + gamma (S - Xhat)

    def _flat(self, p, name) -> torch.Tensor:
        return self._buffer(p, name).view(-1)
