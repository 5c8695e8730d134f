#!/usr/bin/env bash
# One-node Slurm cluster for testing the slurm/ batch scripts against a real
# scheduler (slurmctld + slurmd + a private munged), all state in one directory.
#
#   scripts/slurm_cluster.sh up   [DIR]   # start; prints `export SLURM_CONF=...`
#   scripts/slurm_cluster.sh down [DIR]   # stop exactly the daemons `up` started
#   scripts/slurm_cluster.sh status [DIR]
#
# DIR defaults to $MPIMAT_SLURM_CLUSTER_DIR (required one way or the other).
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
DIR=${2:-${MPIMAT_SLURM_CLUSTER_DIR:-}}
[ -n "$cmd" ] || { sed -n '2,17p' "$0"; exit 1; }
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

node_idle() { sinfo -h -n "$NODE" -o %T | grep -qx idle; }

up() {
    [ "$(id -u)" = 0 ] || cannot "needs root (slurmd must run as root)"
    have_packages || install_packages
    have_packages || die "packages still missing after install"
    if [ -e "$DIR/pids/slurmctld" ] && pid_is "$(cat "$DIR/pids/slurmctld")" slurmctld; then
        die "a cluster is already running from $DIR (run down first)"
    fi
    NODE=$(hostname -s)
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

    local ctld_port slurmd_port
    ctld_port=$(free_port); slurmd_port=$(free_port)
    while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
    cat >"$DIR/slurm.conf" <<EOF
# Generated by scripts/slurm_cluster.sh: one-node test cluster, state in $DIR
ClusterName=mpimat-test
SlurmctldHost=$NODE(127.0.0.1)
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
SlurmdPidFile=$DIR/log/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
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
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/env.sh" <<EOF
export SLURM_CONF=$DIR/slurm.conf
EOF
    export SLURM_CONF="$DIR/slurm.conf"

    start_daemon slurmctld slurmctld -D -i -f "$SLURM_CONF"
    ready slurmctld 20 scontrol ping || die "slurmctld did not answer: $(tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmctld.out" 2>/dev/null)"
    start_daemon slurmd slurmd -D -f "$SLURM_CONF"
    if ! ready slurmd 20 node_idle; then
        alive "$(cat "$DIR/pids/slurmd")" || die "slurmd exited: $(tail -n 20 "$DIR/log/slurmd.log" "$DIR/log/slurmd.out" 2>/dev/null)"
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        wait_for 10 "node idle" node_idle ||
            die "node $NODE not idle: $(sinfo -h -N -o '%N %T %E' 2>&1; tail -n 20 "$DIR/log/slurmd.log" "$DIR/log/slurmd.out" 2>/dev/null)"
    fi
    echo "slurm_cluster: up in $DIR (node $NODE, $NCPUS CPUs, slurmctld port $ctld_port)" >&2
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
    local name pid prog status=0
    for name in slurmd slurmctld munged; do
        [ -e "$DIR/pids/$name" ] || continue
        pid=$(cat "$DIR/pids/$name")
        case $name in munged) prog=munged ;; *) prog=$name ;; esac
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
    local name pid
    for name in munged slurmctld slurmd; do
        pid=$(cat "$DIR/pids/$name" 2>/dev/null || true)
        if pid_is "$pid" "$name"; then echo "$name running (pid $pid)"; else echo "$name not running"; fi
    done
    if [ -e "$DIR/slurm.conf" ]; then SLURM_CONF="$DIR/slurm.conf" sinfo 2>&1 || true; fi
}

case $cmd in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "unknown command '$cmd' (up|down|status)" ;;
esac
