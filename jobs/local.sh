#!/usr/bin/env bash
# The main job, on this machine: 4 MPI ranks (oversubscribed when there are fewer cores).
# Sets up everything first (idempotent). Then trains the small CNN on the embedded digits
# with DecentLaM, DmSGD and PmSGD (the allreduce baseline) and prints a table of the three.
#
# The split is the hardest one (label_sorted: each rank sees two or three classes), the
# graph a ring, momentum 0.9, and the learning rate constant (0.4 for 256 samples, so 0.2
# for the global batch of 4 x 32 by the linear scaling rule), so the final consensus
# distance is each algorithm's steady-state disagreement: DmSGD's grows like
# 1/(1 - momentum) on heterogeneous data, which is what DecentLaM removes.
#
#   NP=4 EPOCHS=20 OUT=results/local jobs/local.sh      (the defaults)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
jobs/setup.sh
. jobs/env.sh
# Ctrl-C: mpiexec sends the ranks SIGCONT at once and SIGKILL 2 x this many seconds later;
# the ranks checkpoint in between (docs/quickstart.md, "Open MPI's mpiexec").
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-10}

NP=${NP:-4}
EPOCHS=${EPOCHS:-20}
OUT=${OUT:-results/local}
ALGORITHMS=(DecentLaM DmSGD PmSGD)
settings=(--dataset digits --partition label_sorted --topology ring --batch-size 32 --lr 0.4 --momentum 0.9
          --warmup-epochs 0 --decay none --epochs "$EPOCHS" --log-every 5 --no-progress)

started=$SECONDS
for algorithm in "${ALGORITHMS[@]}"; do
    log=$OUT/$algorithm.log
    mkdir -p "$OUT"
    run_started=$SECONDS
    if ! "${MPIEXEC[@]}" -n "$NP" python -m mpidec train --algorithm "$algorithm" --out "$OUT/$algorithm" \
            "${settings[@]}" >"$log" 2>&1; then
        status=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' \
                 "$OUT/$algorithm/summary.json" 2>/dev/null || echo unknown)
        if [ "$status" = preempted ]; then  # mpiexec exits 1 when it was signalled, whatever the ranks did
            echo "jobs/local.sh: $algorithm stopped by a signal; its checkpoint is in $OUT/$algorithm"
            exit 0
        fi
        tail -n 30 "$log" >&2
        echo "jobs/local.sh: $algorithm failed (full log: $log)" >&2
        exit 1
    fi
    echo "$algorithm: $((SECONDS - run_started)) s with start-up (log: $log)"
done

echo
echo "digits, $NP ranks on a ring, label-sorted split, $EPOCHS epochs (test accuracy and consensus distance at the end):"
python -m mpidec compare "${ALGORITHMS[@]/#/$OUT/}" --plots "$OUT"
echo "per-run curves: $OUT/<algorithm>/curves.png, $OUT/<algorithm>/consensus.png"
echo "jobs/local.sh: done in $((SECONDS - started)) s"
