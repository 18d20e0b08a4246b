"""Communication: neighbour averaging over a topology, allreduce, two backends.

- :class:`MPICommunicator`: one per MPI rank (mpi4py neighbourhood collectives, Horovod);
- :class:`Simulator`: n virtual nodes in one process, each with a ``SimCommunicator``.

Both implement :class:`Communicator`, the only thing optimizers talk to.
"""

from .base import Communicator, Handle
from .simulator import SimCommunicator, Simulator, SimulatorAborted


def __getattr__(name):
    # mpi4py is imported (and MPI initialised) only when the MPI backend is asked for.
    if name in ("MPICommunicator", "cuda_aware"):
        from . import mpi

        return getattr(mpi, name)
    raise AttributeError(name)


__all__ = ["Communicator", "Handle", "MPICommunicator", "SimCommunicator", "Simulator", "SimulatorAborted",
           "cuda_aware"]
