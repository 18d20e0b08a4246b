#!/usr/bin/env bash
# An emulated cluster on this machine: real MPI over real TCP between emulated hosts.
#
# Each host is a Linux network namespace with its own hostname (a UTS namespace, entered
# when a process starts there), joined to a switch (a bridge in its own namespace) by a
# veth link. Each host's link is shaped in both directions with tc's token-bucket filter
# (tbf): every rank on a host shares that host's rate. Open MPI starts ranks on the hosts
# through an rsh agent (jobs/cluster-rsh.sh) that enters the host's namespaces; mpiexec
# itself runs on host 1. Ranks on one host talk through shared memory, across hosts
# through TCP. Addresses: 10.213.0.<i>/24 on each host's eth0, nothing else; the
# namespaces have no route out of the cluster and nothing changes in this machine's network.
#
#   jobs/cluster.sh run [--hosts N] [--ranks-per-host R] [--rate RATE] [--host-rate I=RATE]... -- CMD...
#                           up, mpiexec CMD on every rank, down (also after a failure or ^C)
#   jobs/cluster.sh up [--hosts N] [--rate RATE] [--host-rate I=RATE]...
#                           (re)create the cluster (idempotent: an old one goes first)
#   jobs/cluster.sh shape [--rate RATE] [--host-rate I=RATE]...   reshape the links of a running cluster
#   jobs/cluster.sh exec [--ranks-per-host R] [--hosts N] -- CMD...   mpiexec CMD on a running cluster
#   jobs/cluster.sh status | down | check      (check: can this machine run one? exit 2 and why not)
#
# RATE: a tc rate (100mbit, 1gbit, 500kbit) or "none" (unshaped); defaults: 2 hosts,
# 2 ranks per host, rate none. --host-rate 2=25mbit gives host 2 its own rate (a slow link).
# MPIDEC_CLUSTER=NAME names the cluster (default "mpidec"): clusters of different names
# can run at the same time. Needs root, network namespaces, tc with tbf; it says so when
# one is missing. What it cannot do: add latency (this kernel has no netem): the links
# have the namespaces' own microsecond latency, whatever the rate.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=${MPIDEC_CLUSTER:-mpidec}
SUBNET=10.213.0
STATE=${TMPDIR:-/tmp}/$NAME-cluster      # hostfile and the link settings of a running cluster

die() { echo "jobs/cluster.sh: $*" >&2; exit 2; }
say() { echo "[cluster $NAME] $*" >&2; }
host() { echo "$NAME-h$1"; }             # namespace name = hostname of host i
switch() { echo "$NAME-sw"; }

# ---------------------------------------------------------------- checks (before any change)

check_machine() {
    [[ $NAME =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "MPIDEC_CLUSTER=$NAME: use 1-10 lower-case letters and digits"
    [[ $(id -u) == 0 ]] || die "needs root (network namespaces, tc): run it as root (e.g. sudo jobs/cluster.sh ...)"
    local tool
    for tool in ip tc unshare; do
        command -v $tool >/dev/null || die "'$tool' not found: install iproute2 and util-linux"
    done
    local probe=$NAME-probe$$
    ip netns add "$probe" 2>/dev/null || die "cannot create network namespaces here ('ip netns add' failed: \
a container without CAP_SYS_ADMIN, or a kernel without CONFIG_NET_NS)"
    local ok=1
    ip netns exec "$probe" unshare --uts true 2>/dev/null || ok=0
    if ((ok)) && ! { ip -n "$probe" link add d0 type veth peer name d1 2>/dev/null &&
                     tc -n "$probe" qdisc add dev d0 root tbf rate 1mbit burst 16kb latency 50ms 2>/dev/null; }; then
        ok=2
    fi
    ip netns delete "$probe"
    ((ok == 1)) || { ((ok == 0)) && die "cannot create UTS namespaces here ('unshare --uts' failed)"; \
                     die "tc's tbf qdisc is unavailable here (kernel without CONFIG_NET_SCH_TBF?)"; }
}

check_rate() {  # RATE WHAT
    [[ $1 == none || $1 =~ ^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)$ ]] ||
        die "$2 '$1': give a tc rate such as 25mbit, 1gbit or 500kbit, or 'none' (unshaped)"
}

# ---------------------------------------------------------------- building blocks

cluster_hosts() {  # the host numbers of the running cluster, one per line
    ip netns list 2>/dev/null | sed -n "s/^$NAME-h\([0-9]\+\)\b.*/\1/p" | sort -n
}

is_up() { ip netns list 2>/dev/null | grep -q "^$(switch)\b"; }

bytes_per_second() {  # tc RATE -> bytes/s
    local value=${1%%[a-z]*} unit=${1##*[0-9.]}
    local scale
    case $unit in bit) scale=1 ;; kbit) scale=1000 ;; mbit) scale=1000000 ;; gbit) scale=1000000000 ;; esac
    awk -v v="$value" -v s="$scale" 'BEGIN { printf "%d", v * s / 8 }'
}

shape_dev() {  # NAMESPACE DEV RATE: tbf at RATE on DEV's egress (or none)
    tc -n "$1" qdisc del dev "$2" root 2>/dev/null || true
    [[ $3 == none ]] && return 0
    # burst: 2 ms at the rate, at least 32 KB (a few full-size frames); queue: 50 ms
    local burst=$(( $(bytes_per_second "$3") / 500 ))
    ((burst >= 32768)) || burst=32768
    tc -n "$1" qdisc add dev "$2" root tbf rate "$3" burst "$burst" latency 50ms
}

shape_host() {  # I RATE: host i's link, both ways (its upload on eth0, its download on the switch port)
    shape_dev "$(host "$1")" eth0 "$2"
    shape_dev "$(switch)" "p$1" "$2"
    echo "$2" >"$STATE/rate-h$1"
}

rate_of() {  # I: host i's rate from --rate / --host-rate
    local spec
    for spec in "${HOST_RATES[@]}"; do
        [[ ${spec%%=*} == "$1" ]] && { echo "${spec#*=}"; return; }
    done
    echo "$RATE"
}

down() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NAME-(sw|h[0-9]+)$" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do  # ranks left behind by a failed job
            kill -9 "$pid" 2>/dev/null || true
        done
        ip netns delete "$ns"
        rm -rf "/etc/netns/$ns"
    done
    rm -rf "$STATE"
    rmdir /etc/netns 2>/dev/null || true  # only when no other namespace keeps files there
}

up() {
    down
    mkdir -p "$STATE"
    local i j sw
    sw=$(switch)
    ip netns add "$sw"
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    ip -n "$sw" link set lo up
    for ((i = 1; i <= HOSTS; i++)); do
        local h
        h=$(host "$i")
        ip netns add "$h"
        ip -n "$sw" link add "p$i" type veth peer name eth0 netns "$h"
        ip -n "$sw" link set "p$i" master br0 up
        ip -n "$h" addr add "$SUBNET.$i/24" dev eth0
        ip -n "$h" link set eth0 up
        ip -n "$h" link set lo up
        shape_host "$i" "$(rate_of "$i")"
        echo "$h slots=$RANKS" >>"$STATE/hostfile"
    done
    # name resolution inside the hosts: the cluster's own names, no DNS (ip netns exec
    # bind-mounts /etc/netns/NS/* over /etc/*)
    for ((i = 1; i <= HOSTS; i++)); do
        mkdir -p "/etc/netns/$(host "$i")"
        { echo "127.0.0.1 localhost"
          for ((j = 1; j <= HOSTS; j++)); do echo "$SUBNET.$j $(host "$j")"; done; } >"/etc/netns/$(host "$i")/hosts"
        : >"/etc/netns/$(host "$i")/resolv.conf"
    done
    say "up: $HOSTS hosts ($(for ((i = 1; i <= HOSTS; i++)); do printf '%s ' "$(host "$i"):$(rate_of "$i")"; done))"
}

status() {
    is_up || { echo "cluster $NAME: down"; return 0; }
    local i
    echo "cluster $NAME: up"
    for i in $(cluster_hosts); do
        echo "  $(host "$i")  $SUBNET.$i  rate $(cat "$STATE/rate-h$i" 2>/dev/null || echo '?')"
    done
}

# mpiexec on host 1, ranks on hosts 1..HOSTS, RANKS per host. Open MPI: TCP between hosts,
# shared memory within one (vader), the rsh agent for the other hosts' daemons; one-sided
# windows that span hosts go through osc/ucx over TCP (progress: MPIDEC_RMA_PROGRESS).
run_mpi() {
    is_up || die "cluster $NAME is down: 'jobs/cluster.sh up' first (or use 'run')"
    local available
    available=$(cluster_hosts | wc -l)
    ((HOSTS <= available)) || die "--hosts $HOSTS: cluster $NAME has $available hosts"
    head -n "$HOSTS" "$STATE/hostfile" | sed "s/slots=.*/slots=$RANKS/" >"$STATE/hostfile.run"
    # shellcheck disable=SC1091
    [[ -n ${VIRTUAL_ENV:-} ]] || . "$ROOT/jobs/env.sh"
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_MCA_rmaps_base_oversubscribe=1
    # the emulated hosts share this machine's cores: a rank waiting in MPI yields its core,
    # as Open MPI does by itself on a node it knows is oversubscribed (busy-polling ranks
    # made a 8-byte fetch-and-add on a busy rank 0 take 28-72 ms instead of 4)
    export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
    export OMPI_MCA_plm_rsh_agent=$ROOT/jobs/cluster-rsh.sh OMPI_MCA_plm_rsh_no_tree_spawn=1
    export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp
    export OMPI_MCA_btl_tcp_if_include=eth0 OMPI_MCA_oob_tcp_if_include=eth0
    export OMPI_MCA_osc=${OMPI_MCA_osc:-sm,ucx} UCX_TLS=${UCX_TLS:-tcp,self} UCX_NET_DEVICES=${UCX_NET_DEVICES:-eth0}
    local h1
    h1=$(host 1)
    ip netns exec "$h1" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$h1" \
        mpiexec --bind-to none --hostfile "$STATE/hostfile.run" -n $((HOSTS * RANKS)) --map-by slot "$@"
}

# ---------------------------------------------------------------- command line

HOSTS=2 RANKS=2 RATE=none HOST_RATES=() CMD=()
parse() {
    while (($#)); do
        case $1 in
            --hosts) HOSTS=${2:-}; shift 2 ;;
            --ranks-per-host) RANKS=${2:-}; shift 2 ;;
            --rate) RATE=${2:-}; shift 2 ;;
            --host-rate) HOST_RATES+=("${2:-}"); shift 2 ;;
            --) shift; CMD=("$@"); break ;;
            *) die "unknown argument '$1' (see the top of jobs/cluster.sh)" ;;
        esac
    done
    [[ $HOSTS =~ ^[1-9][0-9]?$ ]] || die "--hosts '$HOSTS': give a number of hosts from 1 to 99"
    [[ $RANKS =~ ^[1-9][0-9]?$ ]] || die "--ranks-per-host '$RANKS': give a number from 1 to 99"
    check_rate "$RATE" --rate
    local spec
    for spec in "${HOST_RATES[@]}"; do
        [[ $spec =~ ^[0-9]+= ]] || die "--host-rate '$spec': give HOST=RATE, e.g. 2=25mbit"
        ((${spec%%=*} >= 1 && ${spec%%=*} <= HOSTS)) || die "--host-rate '$spec': host ${spec%%=*} is not in 1..$HOSTS"
        check_rate "${spec#*=}" --host-rate
    done
}

main() {
    local command=${1:-}
    (($#)) && shift
    case $command in
        up)
            parse "$@"; check_machine
            trap down EXIT  # a half-built cluster is removed
            up
            trap - EXIT ;;
        down) check_machine; down; say "down" ;;
        status) status ;;
        check) check_machine; echo "cluster: this machine can run an emulated cluster" ;;
        shape)
            HOSTS=$(cluster_hosts | wc -l)
            parse "$@"; check_machine
            is_up || die "cluster $NAME is down: 'jobs/cluster.sh up' first"
            local i
            for i in $(cluster_hosts); do shape_host "$i" "$(rate_of "$i")"; done
            status ;;
        exec)
            parse "$@"; ((${#CMD[@]})) || die "exec: give the command after --"
            check_machine; run_mpi "${CMD[@]}" ;;
        run)
            parse "$@"; ((${#CMD[@]})) || die "run: give the command after --"
            check_machine
            trap down EXIT
            trap 'exit 130' INT TERM
            up
            run_mpi "${CMD[@]}" ;;
        *) die "usage: jobs/cluster.sh run|up|shape|exec|status|down [options] [-- CMD...] (see the top of the file)" ;;
    esac
}

main "$@"
