"""The optimizer of a run, built from its name in ``mpidec.optim`` without knowing its class.

The settings every algorithm shares (``lr``, ``momentum``, ``weight_decay``, ``nesterov``,
``topology``) have their own flags; an algorithm's own options (its class attribute
``options``: ``period`` for LocalSGD, ``variant`` for DmSGD, ...) and the base's tuning
arguments (``overlap``, ``bucket_bytes``, ``measure_consensus``) are *options*:
``--option NAME=VALUE``. Errors the constructor raises for the given settings (D2 with
momentum, say) become :class:`ConfigError`.
"""

from __future__ import annotations

from .. import optim
from .config import ConfigError


def options_of(cls) -> dict:
    """The options ``cls`` accepts: its own, with their defaults, and the base's tuning ones."""
    return {**cls.options, **{name: "default" for name in cls.tuning}}


def resolve(name: str):
    """The optimizer class called ``name`` (case-insensitive)."""
    try:
        return optim.by_name(name)
    except ValueError as exc:
        raise ConfigError(f"--algorithm: {exc}") from exc


def build(config, params, lr: float, topology, comm):
    """``by_name(config.algorithm)(params, lr=lr, ..., topology=topology, comm=comm, **config.options)``.

    Collective (the optimizer checks that all ranks agree on the algorithm, its options and
    the model's shapes); the checks that can fail come first and
    fail the same way everywhere.
    """
    cls = resolve(config.algorithm)
    accepted = options_of(cls)
    unknown = sorted(set(config.options) - set(accepted))
    if unknown:
        known = ", ".join(f"{k}={v!r}" if v != "default" else k for k, v in accepted.items()) or "none"
        raise ConfigError(f"--option {unknown[0]}: {cls.__name__} has no such option (its options: {known})")
    settings = {"momentum": config.momentum, "weight_decay": config.weight_decay, "nesterov": config.nesterov}
    try:
        return cls(params, lr=lr, topology=topology, comm=comm, **settings, **config.options)
    except (TypeError, ValueError) as exc:  # TopologyError is a ValueError
        raise ConfigError(f"--algorithm {cls.__name__}: {exc}") from exc
