#!/usr/bin/env bash
# The emulated-cluster tests: real MPI across 2 emulated hosts x 2 ranks, TCP between them
# (jobs/cluster.sh). Every synchronous optimizer must give the plain 4-rank run's numbers
# bit for bit; AD-PSGD must conserve the mean and make progress over one-sided TCP.
# Needs root and network namespaces; elsewhere it says so and skips (exit 0). A few minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. jobs/env.sh

echo "== cluster tests: 2 emulated hosts x 2 ranks (jobs/cluster.sh)"
if ! reason=$(jobs/cluster.sh check 2>&1); then
    echo "SKIPPED: the emulated-cluster tests cannot run on this machine: ${reason#jobs/cluster.sh: }"
    exit 0
fi
export MPIDEC_CLUSTER=${MPIDEC_CLUSTER:-mpidectest}  # its own cluster: a benchmark's may run beside it
timeout -k 30 "${MPIDEC_CLUSTER_TIMEOUT:-900}" python -m pytest -q --color=no -rs tests/cluster/cluster_tests.py
