"""Every synchronous optimizer on a heterogeneous least-squares problem; rank 0 saves every
rank's trajectory and host, so a run on the emulated cluster can be compared bit for bit
with a plain run on one machine (tests/cluster/cluster_tests.py does both).

    mpiexec -n 4 python tests/cluster/trajectories.py OUT.npz
    jobs/cluster.sh run --hosts 2 --ranks-per-host 2 -- python tests/cluster/trajectories.py OUT.npz
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: the oracles

import mpidec  # noqa: E402
from mpidec import topology as T  # noqa: E402
from mpidec.atomic import atomic_write  # noqa: E402
from mpidec.comm import MPICommunicator  # noqa: E402
from oracles import ALGORITHM_CASES, LeastSquares  # noqa: E402

STEPS, LR = 40, 0.05
TOPOLOGIES = ("ring", "random_matching")  # static, and time-varying (a graph communicator per step)
CASES = [*ALGORITHM_CASES, ("SignumMV", {"lr": 0.01, "momentum": 0.9})]


def case_key(algorithm, kwargs, topology) -> str:
    options = ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    return f"{algorithm}({options})@{topology}"


def main(out):
    from mpi4py import MPI

    world = mpidec.init()
    comm = MPICommunicator()
    problem = LeastSquares(comm.size, seed=21)
    results = {}
    for algorithm, kwargs in CASES:
        for name in TOPOLOGIES:
            options = {"lr": LR, **kwargs}
            mine, _ = problem.worker(comm, algorithm, STEPS, topology=T.build(name, comm.size), **options)
            gathered = comm.allgather_object(mine)
            results[case_key(algorithm, kwargs, name)] = np.stack(gathered)
    hosts = world.allgather(MPI.Get_processor_name())
    if comm.rank == 0:
        atomic_write(out, lambda f: np.savez(f, hosts=np.array(hosts), allreduce=np.array(comm.allreduce_backend),
                                             **results))
        print(f"wrote {len(results)} trajectories from hosts {sorted(set(hosts))} to {out}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
