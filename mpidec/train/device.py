"""Where a rank computes: one GPU per rank, chosen by the rank's index on its node.

The local rank comes from MPI itself (the ranks sharing a node, ``MPI_COMM_TYPE_SHARED``),
so it is right under ``mpirun``, ``srun`` and any other launcher.
"""

from __future__ import annotations

import torch

from .config import ConfigError


def local_rank_and_size() -> tuple[int, int]:
    """This rank's index among the ranks of its node, and how many there are."""
    from mpi4py import MPI

    node = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def choose(choice: str, local_rank: int, local_size: int) -> torch.device:
    """``cpu``; ``cuda`` (GPU ``local_rank``; an error when there are fewer GPUs than ranks
    on the node); ``auto``: ``cuda`` when a GPU is visible, else ``cpu``."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    gpus = torch.cuda.device_count()
    if gpus == 0:
        raise ConfigError("--device cuda: no GPU is visible to this rank (CUDA_VISIBLE_DEVICES, driver?); "
                          "use --device cpu")
    if gpus == 1:  # the launcher gave each rank its own GPU (srun --gpus-per-task=1, CUDA_VISIBLE_DEVICES)
        return torch.device("cuda", 0)
    if local_size > gpus:
        raise ConfigError(f"{local_size} ranks on this node share {gpus} GPUs: launch one rank per GPU "
                          "(srun --ntasks-per-node=GPUS, mpirun -npernode GPUS), or --device cpu")
    return torch.device("cuda", local_rank)
