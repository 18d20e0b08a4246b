#!/usr/bin/env bash
# The whole test suite: set up (idempotent), serial tests, the MPI tests on 4 ranks, then the
# stages that need more of the machine: another MPI (MPICH from PyPI), the emulated cluster
# (network namespaces), a real SLURM. A stage that cannot run here says SKIPPED and why.
# Exits non-zero when anything fails on any rank. Every MPI run is bounded in time:
# a test that runs past MPIDEC_TEST_TIMEOUT (180 s) aborts the job, and the whole
# mpiexec is killed after MPIDEC_SUITE_TIMEOUT (1800 s).
#   MPIDEC_STAGES="mpi cluster slurm"   the stages to run after the MPI tests (default: all; "" none)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
jobs/setup.sh
. jobs/env.sh

echo "== serial tests (topologies, simulator, optimizers, harness)"
python -m pytest -q --color=no tests

echo "== MPI tests: mpiexec -n 4"
timeout -k 30 "${MPIDEC_SUITE_TIMEOUT:-1800}" \
    "${MPIEXEC[@]}" -n 4 python -m pytest -q --color=no --with-mpi -m mpi tests

for stage in ${MPIDEC_STAGES-mpi cluster slurm}; do
    "tests/stage_$stage.sh"
done
