"""The training application behind ``mpidec train``: one MPI rank per worker.

::

    from mpidec.train import TrainConfig, train

    summary = train(TrainConfig(algorithm="DecentLaM", topology="ring", epochs=5))

Modules, one idea each: ``config`` (settings and flags), ``data`` (datasets),
``partition`` (which samples each rank sees), ``batches`` (reproducible batches),
``models``, ``schedule`` (learning rates), ``algorithm`` (building the optimizer),
``evaluation`` (test accuracy, averaged model, consensus distance), ``metrics``
(records, TensorBoard), ``plots``, ``checkpoint``, ``preemption`` (SIGTERM),
``device`` (one GPU per rank), ``loop`` (the training loop), ``compare`` (tables of runs).
"""

from .config import ConfigError, TrainConfig
from .loop import train

__all__ = ["ConfigError", "TrainConfig", "train"]
