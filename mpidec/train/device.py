"""Where a rank computes: one GPU per rank, chosen by the rank's index on its node.

The local rank comes from MPI itself (the ranks sharing a node, ``MPI_COMM_TYPE_SHARED``),
so it is right under ``mpirun``, ``srun`` and any other launcher.
"""

from __future__ import annotations

import torch

from ..runtime import node_rank_and_size
from .config import ConfigError


def local_rank() -> int:
    """This rank's index among the ranks of its node (collective)."""
    return node_rank_and_size()[0]


def choose(choice: str, local_rank: int) -> torch.device:
    """``cpu``; ``cuda``: GPU ``local_rank mod visible GPUs`` (one GPU per rank when there are
    enough; ranks share GPUs round-robin when there are more ranks than GPUs, as with one
    GPU and several ranks); ``auto``: ``cuda`` when a GPU is visible, else ``cpu``."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    gpus = torch.cuda.device_count()
    if gpus == 0:
        raise ConfigError("--device cuda: no GPU is visible to this rank (CUDA_VISIBLE_DEVICES, driver?); "
                          "use --device cpu")
    return torch.device("cuda", local_rank % gpus)
