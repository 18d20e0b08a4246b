#!/usr/bin/env bash
# A real SLURM on this one machine, emulating a two-node cluster, to try the templates on:
# Debian's slurm-wlm (22.05) and munge, slurmctld and two `slurmd -N n1|n2`, PMIx for srun.
#
#   jobs/slurm-local.sh start     install (apt, as root) if needed, start the daemons, wait for
#                                 both nodes; prints the `export SLURM_CONF=...` to use
#   jobs/slurm-local.sh stop      cancel every job, stop the daemons, remove the state folder
#   jobs/slurm-local.sh status    sinfo and squeue, or exit 1 when it is not running
#
#   . <(jobs/slurm-local.sh start)   # then sbatch, srun, squeue, scontrol as on a cluster
#
# Idempotent: `start` on a running instance only checks it. Nothing outside the state folder
# (MPIDEC_SLURM_DIR, default /tmp/mpidec-slurm) is touched besides the apt install: its own
# munged (own socket, own key) and its own ports (MPIDEC_SLURM_PORT, default 16817..16819), so
# a host that already runs munge or SLURM is left alone. No systemd is needed: the daemons
# are started here. Exit status 77 (and a line saying why) where it cannot run: not root,
# no apt-get, or the packages cannot be installed.
#
# What emulating two nodes on one host needs (each found by it failing without):
# - SlurmdParameters=config_overrides: the nodes declare more CPUs than the host has;
# - TmpFS, spool, pid and log paths per node (%n): PMIx fails with "File exists" when both
#   slurmd share a TmpFS;
# - OMPI_MCA_btl=self,tcp in the jobs (the stage exports it): both "nodes" have one hostname,
#   Open MPI then treats ranks on n1 and n2 as on one host and its shared-memory transport
#   crashes; TCP carries every message instead.
# - AuthInfo=cred_expire=10: a requeued job waits cred_expire seconds (default 120) before it
#   may start again.
set -euo pipefail

DIR=${MPIDEC_SLURM_DIR:-/tmp/mpidec-slurm}
PORT=${MPIDEC_SLURM_PORT:-16817}
CPUS=${MPIDEC_SLURM_CPUS:-16}  # per emulated node (the host's cores are shared by both)
CONF=$DIR/slurm.conf
NODES=(n1 n2)
SKIP=77

say() { echo "[slurm-local] $*" >&2; }
skip() { say "SKIP: $*"; exit $SKIP; }
have() { command -v "$1" >/dev/null 2>&1; }

install_packages() {
    have slurmctld && have slurmd && have sbatch && have munged && return 0
    [[ $(id -u) == 0 ]] || skip "SLURM is not installed and installing it needs root (apt-get install slurm-wlm munge)"
    have apt-get || skip "SLURM is not installed and there is no apt-get to install it (Debian/Ubuntu only)"
    say "apt-get install slurm-wlm munge"
    export DEBIAN_FRONTEND=noninteractive
    local log=$DIR.apt.log
    if ! apt-get install -y --no-install-recommends slurm-wlm munge >"$log" 2>&1; then
        apt-get update >>"$log" 2>&1 || true
        apt-get install -y --no-install-recommends slurm-wlm munge >>"$log" 2>&1 ||
            { tail -n 20 "$log" >&2; skip "apt-get install slurm-wlm munge failed (log: $log)"; }
    fi
    have slurmctld && have slurmd && have munged || skip "slurm-wlm installed but slurmctld/slurmd/munged are not on PATH"
}

write_config() {
    local host plugin_dir
    host=$(hostname -s)
    plugin_dir=$(dirname "$(dpkg -L slurm-wlm-basic-plugins 2>/dev/null | grep -m1 '/mpi_pmix.so$')" 2>/dev/null || true)
    cat >"$CONF" <<EOF
# Written by jobs/slurm-local.sh: a two-node SLURM on one host ($host).
ClusterName=mpidec
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$DIR/ctld
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdSpoolDir=$DIR/spool-%n
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmdLogFile=$DIR/slurmd-%n.log
TmpFS=$DIR/tmp-%n
SlurmdParameters=config_overrides
${plugin_dir:+PluginDir=$plugin_dir}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
ReturnToService=2
KillWait=30
MinJobAge=600
InactiveLimit=0
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + 1)) CPUs=$CPUS State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + 2)) CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    pid_alive "$DIR/munge/munged.pid" && return 0
    mkdir -p "$DIR/munge" && chmod 700 "$DIR/munge"
    [[ -f $DIR/munge/munge.key ]] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
                                       chmod 400 "$DIR/munge/munge.key"; }
    munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed" || { cat "$DIR/munge/munged.log" >&2; skip "munged does not start"; }
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every second
wait_for() {
    local seconds=$1 what=$2; shift 2
    for ((i = 0; i < seconds; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    say "FAILED: $what after $seconds s; logs in $DIR:"
    tail -n 15 "$DIR"/*.log >&2 || true
    return 1
}

no_jobs() { [[ -z $(squeue -h -o %i) ]]; }
nodes_idle() { [[ $(sinfo -h -N -o '%t' | grep -c '^idle') == "${#NODES[@]}" ]]; }

start() {
    mkdir -p "$DIR"
    install_packages
    export SLURM_CONF=$CONF
    if pid_alive "$DIR/slurmctld.pid" && nodes_idle; then
        say "already running ($DIR)"
    else
        [[ $(id -u) == 0 ]] || skip "starting slurmctld and slurmd (as SlurmUser root) needs root"
        stop_daemons
        mkdir -p "$DIR/ctld"
        for n in "${NODES[@]}"; do mkdir -p "$DIR/spool-$n" "$DIR/tmp-$n"; done
        write_config
        start_munge
        slurmctld -f "$CONF" -i              # -i: forget old state (jobs of a previous instance)
        wait_for 30 "slurmctld answering" scontrol ping
        for n in "${NODES[@]}"; do slurmd -f "$CONF" -N "$n"; done
        wait_for 60 "both nodes idle" nodes_idle
        say "running: slurmctld and slurmd ${NODES[*]} on $(hostname -s), state in $DIR"
    fi
    echo "export SLURM_CONF=$CONF"
}

# stop_pid FILE: TERM the daemon, KILL it after 10 s
stop_pid() {
    pid_alive "$1" || { rm -f "$1"; return 0; }
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

stop_daemons() {
    for n in "${NODES[@]}"; do stop_pid "$DIR/slurmd-$n.pid"; done
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/munge/munged.pid"
}

stop() {
    [[ -d $DIR ]] || { say "not running"; return 0; }
    export SLURM_CONF=$CONF
    if pid_alive "$DIR/slurmctld.pid"; then
        scancel --full --signal=KILL --user="$(id -un)" 2>/dev/null || true
        wait_for 40 "every job gone" no_jobs || true
    fi
    stop_daemons
    # job processes no slurmd reaped (slurmstepd outlives its slurmd): ours hold our log files open
    local pid
    for pid in $(pgrep -x slurmstepd || true); do
        if ls -l "/proc/$pid/fd" 2>/dev/null | grep -q -- "-> $DIR/"; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$DIR" "$DIR.apt.log"
    say "stopped; removed $DIR"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) export SLURM_CONF=$CONF; pid_alive "$DIR/slurmctld.pid" || { say "not running"; exit 1; }
            sinfo; squeue ;;
    *) echo "usage: $0 start|stop|status   (see the top of this file)" >&2; exit 2 ;;
esac
