# Source me (bash): . jobs/env.sh   -- exports only; run jobs/setup.sh first.
# Then launch with: "${MPIEXEC[@]}" -n 4 python script.py   (or: mpidec_mpiexec -n 4 ...)
MPIDEC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MPIDEC_ROOT

# Open MPI refuses to run as root unless told to (containers run as root).
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Allow more ranks than cores (same as --oversubscribe; ignored by other MPIs).
export OMPI_MCA_rmaps_base_oversubscribe=1
# Not needed on the dev machine (CMA works: 32 MB Isend/Irecv over 4 ranks is clean). In a
# container without CAP_SYS_PTRACE, shared-memory sends > ~4 KB fail with "Read -1, expected
# ..., errno = 1"; then uncomment:
# export OMPI_MCA_btl_vader_single_copy_mechanism=none

# The venv made by jobs/setup.sh (mpi4py, torch, mpidec, horovod).
if [ -f "$MPIDEC_ROOT/.venv/bin/activate" ]; then
    . "$MPIDEC_ROOT/.venv/bin/activate"
else
    echo "jobs/env.sh: $MPIDEC_ROOT/.venv missing; run jobs/setup.sh" >&2
fi

# Launch prefix. --bind-to none: with ranks > cores, pinning every rank to one core hurts.
MPIEXEC=(mpiexec --bind-to none)
mpidec_mpiexec() { "${MPIEXEC[@]}" "$@"; }

# One torch/OpenMP thread per rank unless told otherwise: 4 ranks x 2 threads on 2 cores thrash.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
