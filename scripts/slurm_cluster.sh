#!/usr/bin/env bash
# A Slurm cluster for testing the slurm/ batch scripts against a real scheduler:
# one node, or one node per namespace host (--hosts); slurmctld + slurmd(s) +
# a private munged, all state in one directory.
#
#   scripts/slurm_cluster.sh up   [DIR] [--hosts CLUSTER_DIR]   # start; prints `export SLURM_CONF=...`
#   scripts/slurm_cluster.sh down [DIR]   # stop exactly the daemons `up` started
#   scripts/slurm_cluster.sh status [DIR]
#
# DIR defaults to $MPIMAT_SLURM_CLUSTER_DIR (required one way or the other).
# With --hosts, the cluster spans the hosts h1..hN of a running namespace
# cluster (scripts/cluster.sh up N; CLUSTER_DIR is its state directory):
# slurmctld listens on the bridge, one slurmd per host runs in that host's
# network namespace under its hostname (NodeName=hI NodeAddr=<its address>).
# MPI jobs there want UCX_TLS=tcp,self (`. scripts/cluster/env` before sbatch).
# `up` needs root; it installs the Debian packages slurmctld slurmd slurm-client
# munge libpmix-dev with apt-get if they are missing. Nothing is written to
# /etc: slurm.conf lives in DIR and clients find it through SLURM_CONF
# (DIR/env.sh exports it). The daemons' PIDs are recorded in DIR/pids/ and
# `down` signals only those PIDs (after checking each is still the same
# program), never processes found by name.
#
# Exit codes: 0 ok; 1 failure (see DIR/log/*); 3 cannot run here (not root, or
# packages missing and no apt-get) -- callers may treat 3 as "skip".
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge libpmix-dev)
# The pmix mpi plugin dlopens this file; only libpmix-dev ships the unversioned .so.
PMIX_LIB=/usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so
NCPUS=${MPIMAT_SLURM_CPUS:-4}   # advertised CPUs (config_overrides: may exceed real cores)

die() { echo "slurm_cluster: $*" >&2; exit 1; }
cannot() { echo "slurm_cluster: cannot run here: $*" >&2; exit 3; }

cmd=${1:-}
[ $# -gt 0 ] && shift
DIR=""
HOSTS_DIR=""
while [ $# -gt 0 ]; do
    case $1 in
        --hosts) HOSTS_DIR=${2:?--hosts needs the state directory of scripts/cluster.sh}; shift 2 ;;
        --hosts=*) HOSTS_DIR=${1#*=}; shift ;;
        *) [ -z "$DIR" ] || die "unexpected argument '$1'"; DIR=$1; shift ;;
    esac
done
DIR=${DIR:-${MPIMAT_SLURM_CLUSTER_DIR:-}}
[ -n "$cmd" ] || { sed -n '2,24p' "$0"; exit 1; }
[ -n "$DIR" ] || die "give the state directory as argument or in MPIMAT_SLURM_CLUSTER_DIR"

have_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null &&
        [ -e "$PMIX_LIB" ]
}

install_packages() {
    command -v apt-get >/dev/null || cannot "Slurm packages missing and no apt-get"
    echo "slurm_cluster: installing ${PACKAGES[*]} with apt-get" >&2
    # Keep the packaged services (munge, slurmd, slurmctld) from starting during
    # the install: we run our own instances. Only add a policy-rc.d if the
    # system has none, and remove exactly that file afterwards.
    local policy=/usr/sbin/policy-rc.d added=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; added=1
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${PACKAGES[@]}"; } >&2 || rc=$?
    [ "$added" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get install failed (exit $rc)"
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local port
    while :; do   # no python3: a random high port nobody answers on
        port=$((20000 + RANDOM % 40000))
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

# Start "$@" in the background in its own session, record its PID in pids/$name.
start_daemon() {
    local name=$1; shift
    setsid "$@" </dev/null >"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/pids/$name"
}

# Is PID (from pids/NAME) still alive and still running program PROG?
pid_is() {
    local pid=$1 prog=$2
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$prog"
}

wait_for() {   # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.2
    done
}

queue_empty() { [ -z "$(squeue -h -o %i)" ]; }

# Alive and not a zombie (a reaped-late zombie still answers kill -0).
alive() { [ -r "/proc/$1/stat" ] && ! awk '{exit ($3 == "Z") ? 0 : 1}' "/proc/$1/stat"; }
dead() { ! alive "$1"; }

# ready NAME SECONDS COMMAND...: wait for COMMAND to succeed while daemon NAME
# (started by start_daemon) is alive; fail at once if it died.
ready() {
    local name=$1 limit=$2; shift 2
    local pid end=$((SECONDS + limit))
    pid=$(cat "$DIR/pids/$name")
    until "$@" >/dev/null 2>&1; do
        alive "$pid" || return 1
        [ $SECONDS -lt $end ] || return 1
        sleep 0.2
    done
}

# Every node of the cluster (NODES) is idle.
nodes_idle() {
    local states
    states=$(sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
    local node
    for node in $NODES; do grep -qx "$node idle" <<<"$states" || return 1; done
}

up() {
    [ "$(id -u)" = 0 ] || cannot "needs root (slurmd must run as root)"
    have_packages || install_packages
    have_packages || die "packages still missing after install"
    if [ -e "$DIR/pids/slurmctld" ] && pid_is "$(cat "$DIR/pids/slurmctld")" slurmctld; then
        die "a cluster is already running from $DIR (run down first)"
    fi
    NODE=$(hostname -s)
    NODES=$NODE
    if [ -n "$HOSTS_DIR" ]; then
        [ -f "$HOSTS_DIR/state" ] || die "no namespace cluster in $HOSTS_DIR (run scripts/cluster.sh up N first)"
        command -v nsenter >/dev/null || cannot "nsenter not found (util-linux)"
        # shellcheck disable=SC1091
        . "$HOSTS_DIR/state"   # N, BRIDGE_IP, NS_i, IP_i
        NODES=$(seq -f 'h%g' 1 "$N" | tr '\n' ' ')
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    chmod 700 "$DIR"
    mkdir -p "$DIR"/{munge,log,pids,state,spool}
    chmod 700 "$DIR/munge"

    # If anything below fails, stop whatever was already started.
    trap 'rc=$?; [ $rc -eq 0 ] || { echo "slurm_cluster: bring-up failed; stopping what started" >&2; down || true; }' EXIT
    # Private munged: own key, socket, pid and seed files.
    local sock="$DIR/munge/munge.sock"
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
    start_daemon munged munged --foreground --force --socket="$sock" \
        --key-file="$DIR/munge/munge.key" --log-file="$DIR/log/munged.log" \
        --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed"
    ready munged 10 test -S "$sock" || die "munged did not start: $(cat "$DIR/log/munged.out" "$DIR/log/munged.log" 2>/dev/null)"

    local ctld_port slurmd_port ctld_addr=127.0.0.1 kind=one-node node_lines i ipvar slurmd_files=slurmd
    ctld_port=$(free_port); slurmd_port=$(free_port)
    while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
    node_lines="NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP"
    if [ -n "$HOSTS_DIR" ]; then
        # The controller must be named after this machine (another name is
        # refused as "not a valid controller"); its address is on the bridge.
        ctld_addr=$BRIDGE_IP kind="$N-node (hosts of $HOSTS_DIR)" node_lines="" slurmd_files=slurmd-%n
        for ((i = 1; i <= N; i++)); do
            ipvar="IP_$i"
            node_lines+="NodeName=h$i NodeAddr=${!ipvar} CPUs=$NCPUS State=UNKNOWN"$'\n'
            mkdir -p "$DIR/spool/h$i"
        done
        node_lines+="PartitionName=debug Nodes=h[1-$N] Default=YES MaxTime=INFINITE State=UP"
    fi
    cat >"$DIR/slurm.conf" <<EOF
# Generated by scripts/slurm_cluster.sh: $kind test cluster, state in $DIR
ClusterName=mpimat-test
SlurmctldHost=$NODE($ctld_addr)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/log/slurmctld.pid
SlurmdPidFile=$DIR/log/$slurmd_files.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/$slurmd_files.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd and no cgroup delegation in containers: plain process tracking.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Let the node advertise $NCPUS CPUs whatever it really has, so N-rank jobs run.
SlurmdParameters=config_overrides
# Impossible requests fail at submit time instead of pending forever.
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SchedulerType=sched/backfill
$node_lines
EOF
    cat >"$DIR/env.sh" <<EOF
export SLURM_CONF=$DIR/slurm.conf
EOF
    export SLURM_CONF="$DIR/slurm.conf"

    start_daemon slurmctld slurmctld -D -i -f "$SLURM_CONF"
    ready slurmctld 20 scontrol ping || die "slurmctld did not answer: $(tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmctld.out" 2>/dev/null)"
    local first="" node nsvar
    if [ -z "$HOSTS_DIR" ]; then
        start_daemon slurmd slurmd -D -f "$SLURM_CONF"
        first=slurmd
    else
        # nsenter, not `ip netns exec`: that remounts /sys without the cgroup
        # file system and slurmd fails ("No filesystem mounted on /sys/fs/cgroup").
        # unshare --uts gives each slurmd its host's name, its NodeName.
        for ((i = 1; i <= N; i++)); do
            nsvar="NS_$i"
            start_daemon "slurmd-h$i" nsenter --net="/var/run/netns/${!nsvar}" unshare --uts \
                sh -c 'hostname "$1" && exec slurmd -D -f "$2"' sh "h$i" "$SLURM_CONF"
        done
        first=slurmd-h1
    fi
    if ! ready "$first" 20 nodes_idle; then
        for name in "$DIR"/pids/slurmd*; do
            name=$(basename "$name")
            node=${name#slurmd}; node=${node#-}   # "" in the one-node cluster
            alive "$(cat "$DIR/pids/$name")" || die "$name exited: $(tail -n 20 "$DIR/log/slurmd${node:+-$node}.log" "$DIR/log/$name.out" 2>/dev/null)"
        done
        for node in $NODES; do
            scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
        done
        wait_for 10 "nodes idle" nodes_idle ||
            die "nodes $NODES not idle: $(sinfo -h -N -o '%N %T %E' 2>&1; tail -n 20 "$DIR"/log/slurmd-*.log "$DIR"/log/slurmd*.out 2>/dev/null)"
    fi
    echo "slurm_cluster: up in $DIR (nodes $NODES, $NCPUS CPUs each, slurmctld $ctld_addr port $ctld_port)" >&2
    echo "export SLURM_CONF=$SLURM_CONF"
    trap - EXIT
}

down() {
    [ -d "$DIR/pids" ] || { echo "slurm_cluster: nothing recorded in $DIR" >&2; return 0; }
    DIR=$(cd "$DIR" && pwd)
    export SLURM_CONF="$DIR/slurm.conf"
    # Cancel what is still queued or running so no job step outlives slurmd.
    if [ -e "$DIR/pids/slurmctld" ] && pid_is "$(cat "$DIR/pids/slurmctld")" slurmctld; then
        if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
            scancel --full $(squeue -h -o %i) 2>/dev/null || true
            wait_for 20 "queue empty" queue_empty || true
        fi
    fi
    local name pid prog status=0 names=()
    for name in "$DIR"/pids/slurmd*; do [ -e "$name" ] && names+=("$(basename "$name")"); done
    for name in "${names[@]}" slurmctld munged; do
        [ -e "$DIR/pids/$name" ] || continue
        pid=$(cat "$DIR/pids/$name")
        case $name in slurmd*) prog=slurmd ;; *) prog=$name ;; esac
        if pid_is "$pid" "$prog"; then
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_for 15 "$name exit" dead "$pid"; then
                echo "slurm_cluster: $name ($pid) ignored SIGTERM; killing" >&2
                kill -KILL "$pid" 2>/dev/null || true
                wait_for 5 "$name exit" dead "$pid" || status=1
            fi
        fi
        rm -f "$DIR/pids/$name"
    done
    echo "slurm_cluster: down ($DIR)" >&2
    return $status
}

status() {
    local name pid names=(munged slurmctld)
    for name in "$DIR"/pids/slurmd*; do [ -e "$name" ] && names+=("$(basename "$name")"); done
    [ ${#names[@]} -gt 2 ] || names+=(slurmd)
    for name in "${names[@]}"; do
        pid=$(cat "$DIR/pids/$name" 2>/dev/null || true)
        if pid_is "$pid" "${name%%-*}"; then echo "$name running (pid $pid)"; else echo "$name not running"; fi
    done
    if [ -e "$DIR/slurm.conf" ]; then SLURM_CONF="$DIR/slurm.conf" sinfo 2>&1 || true; fi
}

case $cmd in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "unknown command '$cmd' (up|down|status)" ;;
esac
