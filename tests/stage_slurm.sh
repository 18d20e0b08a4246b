#!/usr/bin/env bash
# The SLURM stage: start a real SLURM on this machine (jobs/slurm-local.sh: Debian's slurm-wlm,
# slurmctld and two slurmd emulating two nodes), run jobs/slurm-cpu.sbatch end to end under
# sbatch (tests/slurm/scenarios.py: a normal run, a run preempted mid-training that requeues
# itself and resumes bit-identical, SIGTERM during start-up, two concurrent submissions, the
# mpirun fallback, a bad flag), then stop SLURM and remove its state.
#
#   tests/stage_slurm.sh            needs root where SLURM is not installed and running yet
#
# Where SLURM cannot be had (not root, no apt-get, the daemons do not start) it prints
# "SLURM stage: SKIPPED (why)" and exits 0; any job not ending as expected: exit 1.
# MPIDEC_SLURM_KEEP=1 leaves SLURM running and the jobs' folder in place afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/jobs/env.sh"

echo "== SLURM stage: jobs/slurm-cpu.sbatch under a real SLURM (two emulated nodes)"
rc=0
exports=$("$ROOT/jobs/slurm-local.sh" start) || rc=$?
if ((rc == 77)); then
    echo "== SLURM stage: SKIPPED (jobs/slurm-local.sh could not provide SLURM; its reason is above)"
    exit 0
elif ((rc != 0)); then
    echo "== SLURM stage: FAILED to start SLURM (jobs/slurm-local.sh exit $rc)" >&2
    exit 1
fi
eval "$exports"   # SLURM_CONF

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mpidec-slurm-jobs.XXXXXX")   # outside the repository on purpose
cleanup() {
    if [[ ${MPIDEC_SLURM_KEEP:-0} == 1 ]]; then
        echo "== SLURM stage: left running (SLURM_CONF=$SLURM_CONF); jobs in $WORK"
    else
        "$ROOT/jobs/slurm-local.sh" stop
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Both emulated nodes have this host's name: Open MPI would take ranks on n1 and n2 for one
# host and its shared-memory transport crashes; TCP carries every message instead.
export OMPI_MCA_btl=self,tcp
if timeout -k 10 1200 python "$ROOT/tests/slurm/scenarios.py" "$ROOT" "$WORK"; then
    echo "== SLURM stage: passed"
else
    echo "== SLURM stage: FAILED" >&2
    exit 1
fi
