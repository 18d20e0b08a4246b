"""The algorithms, one ``torch.optim.Optimizer`` each (update rules in their docstrings)."""

from .adpsgd import ADPSGD
from .base import DecentralizedOptimizer
from .choco import CHOCO
from .d2 import D2
from .decentlam import DecentLaM
from .diloco import DiLoCo
from .dmsgd import DSGD, DmSGD
from .katyusha import SVRG, KatyushaX  # not in ALGORITHMS: their step needs closures
from .localsgd import LocalSGD
from .osgp import OSGP
from .pmsgd import PmSGD
from .qgdmsgd import QGDmSGD
from .sgp import SGP
from .signum import SignumMV
from .tracking import GT

ALGORITHMS = {cls.__name__: cls for cls in (DSGD, DmSGD, DecentLaM, QGDmSGD, D2, LocalSGD, PmSGD, ADPSGD, SignumMV,
                                                  GT, CHOCO, DiLoCo, SGP, OSGP)}


def by_name(name: str):
    """The optimizer class called ``name`` (case-insensitive), with a clear error otherwise."""
    for key, cls in ALGORITHMS.items():
        if key.lower() == name.lower():
            return cls
    raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")


__all__ = [*ALGORITHMS, "DecentralizedOptimizer", "ALGORITHMS", "by_name", "SVRG", "KatyushaX"]
