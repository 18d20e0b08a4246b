"""The optimizer of a run, built from its name in ``mpidec.optim`` without knowing its class.

The settings every algorithm shares (``lr``, ``momentum``, ``weight_decay``, ``nesterov``,
``topology``) have their own flags; whatever else its constructor names (``period`` for
LocalSGD, ``variant`` for DmSGD, ``overlap``, ...) is an *option*: ``--option NAME=VALUE``. Errors the constructor raises for
the given settings (D2 with momentum, say) become :class:`ConfigError`.
"""

from __future__ import annotations

import inspect

from torch.optim import Optimizer

from .. import optim
from .config import ConfigError

COMMON = ("self", "params", "lr", "momentum", "weight_decay", "nesterov", "topology", "comm")


def _parameters(cls) -> dict:
    return dict(inspect.signature(cls.__init__).parameters)


def options_of(cls) -> dict:
    """The algorithm-specific constructor arguments of ``cls`` and their defaults: the named
    arguments of its ``__init__`` and, while an ``__init__`` passes ``**kwargs`` on, of its bases'."""
    options = {}
    for klass in cls.__mro__:
        if klass is Optimizer:
            break
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        for p in parameters:
            if p.name not in COMMON and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                options.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return options


def resolve(name: str):
    """The optimizer class called ``name`` (case-insensitive)."""
    try:
        return optim.by_name(name)
    except ValueError as exc:
        raise ConfigError(f"--algorithm: {exc}") from exc


def build(config, params, lr: float, topology):
    """``by_name(config.algorithm)(params, lr=lr, ..., topology=topology, **config.options)``.

    Collective (the optimizer makes its communicator and checks that all ranks agree on the
    model's shapes); the checks that can fail come first and fail the same way everywhere.
    A common setting the constructor does not take is left out when it is off (zero or
    False) and an error otherwise.
    """
    cls = resolve(config.algorithm)
    accepted = options_of(cls)
    unknown = sorted(set(config.options) - set(accepted))
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "none"
        raise ConfigError(f"--option {unknown[0]}: {cls.__name__} has no such option (its options: {known})")
    settings = {"momentum": config.momentum, "weight_decay": config.weight_decay, "nesterov": config.nesterov}
    for key in [k for k in settings if k not in _parameters(cls)]:
        if settings.pop(key):
            raise ConfigError(f"--{key.replace('_', '-')}: {cls.__name__} has no {key}; leave it at 0 / off")
    try:
        return cls(params, lr=lr, topology=topology, **settings, **config.options)
    except (TypeError, ValueError) as exc:  # TopologyError is a ValueError
        raise ConfigError(f"--algorithm {cls.__name__}: {exc}") from exc
