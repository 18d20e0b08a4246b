"""The emulated cluster (jobs/cluster.sh): real MPI over TCP between emulated hosts.

Run by tests/stage_cluster.sh (as root, where network namespaces work); it is not part of
the plain serial run. Each test starts its own cluster and removes it after.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = [str(ROOT / "jobs/cluster.sh"), "run", "--hosts", "2", "--ranks-per-host", "2", "--rate", "1gbit", "--"]
MPIEXEC = ["mpiexec", "--bind-to", "none", "-n", "4"]
TRAJECTORIES = str(ROOT / "tests/cluster/trajectories.py")
TIMEOUT = 600


def run(command, env=None):
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module", autouse=True)
def cluster_possible():
    check = subprocess.run([str(ROOT / "jobs/cluster.sh"), "check"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"no emulated cluster on this machine: {check.stderr.strip()}")


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
    out = tmp_path_factory.mktemp("trajectories")
    run([*MPIEXEC, sys.executable, TRAJECTORIES, str(out / "plain.npz")])
    run([*CLUSTER, sys.executable, TRAJECTORIES, str(out / "cluster.npz")])
    return np.load(out / "plain.npz"), np.load(out / "cluster.npz")


def case_keys():
    sys.path.insert(0, str(ROOT / "tests"))
    from cluster.trajectories import CASES, TOPOLOGIES, case_key

    return [case_key(a, kw, t) for a, kw in CASES for t in TOPOLOGIES]


def test_the_cluster_run_spans_two_hosts(trajectories):
    plain, cluster = trajectories
    assert len(set(plain["hosts"])) == 1
    hosts = list(cluster["hosts"])
    assert hosts[0] == hosts[1] != hosts[2] == hosts[3], hosts
    assert str(plain["allreduce"]) == str(cluster["allreduce"])


@pytest.mark.parametrize("key", case_keys())
def test_every_synchronous_optimizer_gives_the_plain_runs_bits(trajectories, key):
    plain, cluster = trajectories
    assert plain[key].shape == cluster[key].shape == (4, 40, 6)
    assert plain[key].tobytes() == cluster[key].tobytes(), \
        f"{key}: largest difference {np.abs(plain[key] - cluster[key]).max():.3g}"


def test_adpsgd_across_hosts():
    out = run([*CLUSTER, sys.executable, "-m", "pytest", "-q", "--color=no", "--with-mpi", "-p", "no:cacheprovider",
               str(ROOT / "tests/cluster/adpsgd_across_hosts.py")],
              env={"MPIDEC_TEST_TIMEOUT": "400"})  # one-sided ops over TCP: ms each, more under load
    assert "4 passed" in out, out
