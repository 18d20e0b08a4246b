#!/usr/bin/env bash
# The main job, on this machine: 4 MPI ranks (oversubscribed when there are fewer cores).
# Sets up everything first (idempotent). For now: the self-check of MPI + mpi4py + torch +
# Horovod; one line per rank.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
jobs/setup.sh
. jobs/env.sh
"${MPIEXEC[@]}" -n "${NP:-4}" python -m mpidec.selfcheck
