"""The training application behind ``mpidec train``: one MPI rank per worker.

::

    from mpidec.train import TrainConfig, train

    summary = train(TrainConfig(algorithm="DecentLaM", topology="ring", epochs=5))

Modules, one idea each: ``config`` (settings and flags), ``data`` (datasets),
``partition`` (which samples each rank sees), ``batches`` (reproducible batches),
``models``, ``schedule`` (learning rates), ``algorithm`` (building the optimizer),
``evaluation`` (test accuracy, averaged model, consensus distance), ``metrics``
(records, TensorBoard), ``plots``, ``checkpoint``, ``preemption`` (stop requests, agreed
at step boundaries), ``device`` (one GPU per rank), ``local`` (what a rank sets up on
its own: output folder, saved state, device, data, model, partition), ``loop`` (the
training loop), ``asynchronous`` (its ADPSGD form), ``run`` (the entry point: picks the
loop), ``report`` (summary.json and what rank 0 prints), ``compare`` (tables of runs).
"""

from .config import ConfigError, TrainConfig

__all__ = ["ConfigError", "TrainConfig", "train"]


def __getattr__(name):
    # torch is imported when training is asked for, not for the flags: `mpidec train --help`
    # and usage errors answer at once, and the stop signals are caught before the import
    if name == "train":
        from .run import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
