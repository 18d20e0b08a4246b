# Sourced (bash) by jobs/slurm-*.sbatch: run one start of a training job and decide, from the
# run's own status, whether SLURM should start the job again. docs/slurm.md explains it all.
#
#   mpidec_run OUT LAUNCHER... python -m mpidec train FLAGS...
#       adds --out OUT (and --resume when OUT holds a checkpoint), runs it, then reads
#       OUT/summary.json (mpidec/train/report.py): "finished" -> exit status 0; "preempted" ->
#       scontrol requeue (the same job id starts again later and resumes); "failed", "running"
#       (the processes died) or none -> the launcher's failure status, not requeued.
#
# A SIGTERM that reaches the batch shell is passed on to the ranks: with srun by
# `scancel --signal=TERM JOB` (srun itself answers SIGTERM with SIGKILL to the ranks), with
# mpirun by `kill -TERM` to mpirun (it sends the ranks SIGCONT at once, SIGTERM
# odls_base_sigkill_timeout seconds later, SIGKILL as long again after that). The shell then
# keeps waiting for the launcher.
# Written for bash 4.2 as well (no empty arrays under set -u).

mpidec_signalled=${mpidec_signalled:-0}  # 1 once the batch shell got SIGTERM (--signal=B:, scancel -b)
mpidec_launcher_pid=  # the running srun/mpirun, while there is one
mpidec_forward=       # how to pass SIGTERM on to the ranks: scancel | kill
mpidec_passed_on=0    # SIGTERM is passed on once per start

mpidec_on_term() {
    mpidec_signalled=1
    echo "mpidec job: SIGTERM at $(date +%T)"
    mpidec_pass_on
}

mpidec_pass_on() {
    [[ -n $mpidec_launcher_pid ]] && ((!mpidec_passed_on)) || return 0
    mpidec_passed_on=1
    echo "mpidec job: passing SIGTERM on to the ranks ($mpidec_forward)"
    case $mpidec_forward in
        kill) kill -TERM "$mpidec_launcher_pid" 2>/dev/null || true ;;
        scancel) scancel --signal=TERM "$SLURM_JOB_ID" || true ;;
    esac
}

trap mpidec_on_term TERM

# mpidec_status FILE OLD: the "status" field of the summary.json FILE; empty when it is missing,
# unreadable, or unchanged from OLD, its copy from before this start (an earlier start's status)
mpidec_status() {
    if [[ -s $2 ]] && cmp -s "$1" "$2"; then return 0; fi
    python -c 'import json, sys
try:
    print(json.load(open(sys.argv[1])).get("status", ""))
except Exception:
    pass' "$1" 2>/dev/null || true
}

# mpidec_requeue OUT WHY: have SLURM start this job again (same id; it resumes from OUT)
mpidec_requeue() {
    echo "mpidec job: $2; requeueing job $SLURM_JOB_ID (start $((${SLURM_RESTART_COUNT:-0} + 1)) ended)"
    # On success SLURM ends this script at once ("CANCELLED ... DUE TO JOB REQUEUE"). When SLURM
    # preempted the job, it has already requeued it and this call fails harmlessly.
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        echo "mpidec job: not requeued; to continue, submit again with MPIDEC_OUT=$1 (it resumes)" >&2
    fi
}

# mpidec_launch COMMAND...: start COMMAND in the background (so that SIGTERM can be passed on),
# wait for it to end, whatever signals arrive meanwhile; its exit status in mpidec_launch_status
mpidec_launch() {
    case ${1##*/} in
        mpirun | mpiexec | orterun | prterun) mpidec_forward=kill ;;
        *) mpidec_forward=scancel ;;
    esac
    "$@" &
    mpidec_launcher_pid=$!
    # a SIGTERM that came just before the launch: pass it on now that there is someone to tell
    if ((mpidec_signalled)); then mpidec_pass_on; fi
    while kill -0 "$mpidec_launcher_pid" 2>/dev/null; do
        wait "$mpidec_launcher_pid" 2>/dev/null || true   # returns early when SIGTERM arrives
    done
    mpidec_launch_status=0
    wait "$mpidec_launcher_pid" 2>/dev/null || mpidec_launch_status=$?
    mpidec_launcher_pid=
}

mpidec_run() {
    local out=$1 resume="" old status
    shift
    if ((mpidec_signalled)); then
        mpidec_requeue "$out" "SIGTERM before the launch: nothing to save"
        return 0
    fi
    [[ -f $out/checkpoints/latest ]] && resume=--resume
    mkdir -p "$out"
    old=$(mktemp "${TMPDIR:-/tmp}/mpidec-summary.XXXXXX")
    cp "$out/summary.json" "$old" 2>/dev/null || true   # the status read below must be this start's
    echo "mpidec job $SLURM_JOB_ID, start $((${SLURM_RESTART_COUNT:-0} + 1)) on $SLURM_JOB_NODELIST:" \
         "output in $out${resume:+, resuming from its checkpoint}"
    mpidec_launch "$@" --out "$out" $resume
    status=$(mpidec_status "$out/summary.json" "$old")
    rm -f "$old"
    case $status in
        finished)
            echo "mpidec job: finished; $out/summary.json"
            return 0 ;;
        preempted)
            mpidec_requeue "$out" "the run checkpointed before the end of the allocation"
            return 0 ;;
        failed) ;;  # a setting that cannot work: the error is above, another start would repeat it
        *)  # none, or "running": the processes died
            if ((mpidec_signalled && mpidec_launch_status != 0)); then
                # told to stop, but some ranks died before they could answer (killed during
                # interpreter start-up, or SIGKILL after the grace time): again from the last checkpoint
                mpidec_requeue "$out" "stopped by SIGTERM without a status (launcher exit $mpidec_launch_status)"
                return 0
            fi ;;
    esac
    echo "mpidec job: the run ended ${status:+with status \"$status\" }(launcher exit" \
         "$mpidec_launch_status): see the messages above; not requeued" >&2
    return $((mpidec_launch_status ? mpidec_launch_status : 1))
}
