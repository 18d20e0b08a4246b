"""mpidec: decentralized deep-learning training on MPI.

Layers (imports point downward): ``mpidec.optim`` (algorithms) -> ``mpidec.comm``
(neighbour averaging, allreduce; MPI or simulator) -> ``mpidec.topology`` (mixing matrices).
"""

from .runtime import init, rprint

__version__ = "0.1.0"

__all__ = ["init", "rprint", "__version__"]
