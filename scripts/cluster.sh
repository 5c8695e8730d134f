#!/usr/bin/env bash
# A cluster of N "hosts" on this machine: each host hI is a network namespace
# with its own hostname (set per command by unshare --uts) and address on a
# private bridge, linked by a veth pair capped at RATE in both directions.
#
#   scripts/cluster.sh up N [--bandwidth RATE] [--dir DIR]   # start; prints the state dir
#   scripts/cluster.sh down [--dir DIR]                      # remove what `up` made
#   scripts/cluster.sh exec HOST CMD...                      # run CMD on host HOST (h1..hN)
#   scripts/cluster.sh status [--dir DIR]
#   scripts/cluster.sh ip HOST                               # print a host's address
#
# RATE is a tc rate (400mbit, 1gbit, ...; default 1gbit; "none": uncapped),
# applied with `tc qdisc add ... tbf rate RATE burst 64kb latency 100ms` on
# both ends of each host's veth. The hosts get 10.213.X.1..N/24 on a bridge
# that has 10.213.X.254 in this (the root) namespace, X chosen free here; the
# hosts have no default route, so their traffic stays on the bridge.
# State lives in DIR (default: a new $TMPDIR/mpimat-cluster.XXXXXX); `up`
# prints `export MPIMAT_CLUSTER_DIR=DIR`, the other commands find the cluster
# through --dir, MPIMAT_CLUSTER_DIR, or as the only one in $TMPDIR. `down`
# reads DIR/created, so it also cleans up after a crashed `up`; it kills
# whatever still runs in the cluster's namespaces, and is safe to repeat.
#
# MPI across the hosts (Hydra's rsh launcher with scripts/cluster/rsh):
#   . scripts/cluster/env     # UCX_TLS=tcp,self (traffic over the links, not shared memory)
#   mpiexec -launcher rsh -launcher-exec scripts/cluster/rsh -localhost "$MPIMAT_BRIDGE_IP" \
#       -hosts h1,h2 -n 4 -ppn 2 python -m mpimat --size 2048
#
# Needs root, ip (iproute2), tc and unshare. Exit codes: 0 ok; 1 failure;
# 2 usage; 3 cannot run here (not root, tools missing): callers may skip.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/lib.sh
. "$HERE/cluster/lib.sh"

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { cluster_err "$*"; exit 1; }
cannot() { cluster_err "cannot run here: $*"; exit 3; }

need_root() {
    [ "$(id -u)" = 0 ] || cannot "needs root (network namespaces, veth links and tc need CAP_NET_ADMIN)"
    local tool
    for tool in ip tc unshare; do
        command -v "$tool" >/dev/null || cannot "'$tool' not found (install iproute2 / util-linux)"
    done
}

# Record an object in DIR/created before anything else can fail.
record() { echo "$*" >>"$DIR/created"; }

# An X for 10.213.X.0/24 that no address, route or cluster of ours uses yet.
pick_subnet() {
    local x used
    used=$( { ip -o -4 addr show; ip -4 route show table all; ip -o link show; ip netns list; } 2>/dev/null)
    for x in $(shuf -i 1-250); do
        grep -q "10\.213\.$x\." <<<"$used" && continue
        grep -qE "(^|[ :])mpc${x}(br|h[0-9]+)[@: ]" <<<"$used" && continue
        grep -q "^mpimat-c${x}-" <<<"$used" && continue
        echo "$x"; return 0
    done
    return 1
}

cap_link() {   # cap_link NETNS|- DEV: tbf on DEV's egress
    [ "$RATE" = none ] && return 0
    local ns=()
    [ "$1" = - ] || ns=(-n "$1")
    tc "${ns[@]}" qdisc replace dev "$2" root tbf rate "$RATE" burst 64kb latency 100ms 2>&1
}

up() {
    local n="" rate=1gbit
    while [ $# -gt 0 ]; do
        case $1 in
            --bandwidth) rate=${2:?--bandwidth needs a RATE}; shift 2 ;;
            --bandwidth=*) rate=${1#*=}; shift ;;
            --dir) DIR=${2:?--dir needs a directory}; shift 2 ;;
            --dir=*) DIR=${1#*=}; shift ;;
            -h|--help) usage 0 ;;
            *) [ -z "$n" ] || { cluster_err "unexpected argument '$1'"; usage; }; n=$1; shift ;;
        esac
    done
    [[ $n =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 64 ] || { cluster_err "up needs a host count N (1..64)"; usage; }
    if [ "$rate" != none ] && ! [[ $rate =~ ^[0-9]+(\.[0-9]+)?([kKmMgGtT]i?)?(bit|bps)$ ]]; then
        cluster_err "bad --bandwidth '$rate' (a tc rate such as 400mbit or 1gbit, or none)"; exit 2
    fi
    need_root
    [ -n "$DIR" ] || DIR=${MPIMAT_CLUSTER_DIR:-}
    if [ -z "$DIR" ]; then
        DIR=$(mktemp -d "$CLUSTER_TMP/mpimat-cluster.XXXXXX")
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [ -f "$DIR/state" ]; then
        cluster_load "$DIR"
        if [ "$N" = "$n" ] && [ "$RATE" = "$rate" ] && healthy; then
            echo "cluster: already up in $DIR ($N hosts, $RATE)" >&2
            print_env; return 0
        fi
        die "another cluster is recorded in $DIR ($N hosts, $RATE): run down first"
    fi
    if [ -s "$DIR/created" ]; then
        echo "cluster: $DIR holds the remains of an earlier bring-up; removing them" >&2
        down_dir
    fi

    trap 'rc=$?; [ $rc -eq 0 ] || { cluster_err "bring-up failed; removing what was made"; down_dir && rmdir "$DIR" 2>/dev/null; }' EXIT
    local x
    RATE=$rate
    exec 9<"$CLUSTER_TMP"   # lock the directory itself: no lock file left behind
    flock -w 30 9 || die "another bring-up holds the lock on $CLUSTER_TMP"
    x=$(pick_subnet) || die "no free 10.213.X.0/24 subnet"
    : >"$DIR/created"
    local bridge="mpc${x}br" bridge_ip="10.213.$x.254" i ns veth peer out
    record "link $bridge"
    ip link add "$bridge" type bridge stp_state 0 forward_delay 0
    ip addr add "$bridge_ip/24" dev "$bridge"
    ip link set "$bridge" up
    flock -u 9; exec 9>&-   # the bridge's address now reserves the subnet
    {
        echo "# scripts/cluster.sh state (sourced by cluster.sh and cluster/rsh)"
        echo "ID=$x"; echo "N=$n"; echo "RATE=$rate"; echo "SUBNET=10.213.$x.0/24"
        echo "BRIDGE=$bridge"; echo "BRIDGE_IP=$bridge_ip"
    } >"$DIR/state.tmp"
    for ((i = 1; i <= n; i++)); do
        ns="mpimat-c$x-h$i"; veth="mpc${x}h$i"; peer="mpc${x}p$i"
        record "netns $ns"
        ip netns add "$ns"
        record "link $veth"
        ip link add "$veth" type veth peer name "$peer"
        ip link set "$peer" netns "$ns"
        ip -n "$ns" link set "$peer" name eth0
        ip -n "$ns" addr add "10.213.$x.$i/24" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
        ip link set "$veth" master "$bridge"
        ip link set "$veth" up
        # Both directions: the host end's egress is traffic into hI, the
        # namespace end's egress is traffic out of hI.
        out=$(cap_link - "$veth") || die "tc on $veth failed: $out"
        out=$(cap_link "$ns" eth0) || die "tc in $ns failed: $out"
        echo "NS_$i=$ns"; echo "IP_$i=10.213.$x.$i"; echo "VETH_$i=$veth"
    done >>"$DIR/state.tmp"
    mv "$DIR/state.tmp" "$DIR/state"
    cluster_load "$DIR"
    wait_reachable || die "hosts not reachable from the bridge"
    trap - EXIT
    echo "cluster: up in $DIR: hosts h1..h$N on $SUBNET (bridge $BRIDGE $BRIDGE_IP), links capped at $RATE" >&2
    print_env
}

# Every host answers on its address from the root namespace (TCP connect to a
# closed port: a refusal proves the path; no ping binary needed).
wait_reachable() {
    local i ipvar end=$((SECONDS + 10))
    for ((i = 1; i <= N; i++)); do
        ipvar="IP_$i"
        until probe "${!ipvar}"; do
            [ $SECONDS -lt $end ] || { cluster_err "h$i (${!ipvar}) does not answer"; return 1; }
            sleep 0.1
        done
    done
}

probe() {   # refused (or accepted) within 1 s = reachable
    local err
    err=$(timeout 1 bash -c "exec 3<>/dev/tcp/$1/9" 2>&1) && return 0
    grep -q "refused" <<<"$err"
}

healthy() {
    local i nsvar
    ip link show "$BRIDGE" >/dev/null 2>&1 || return 1
    for ((i = 1; i <= N; i++)); do
        nsvar="NS_$i"
        [ -e "/var/run/netns/${!nsvar}" ] || return 1
    done
}

print_env() {
    echo "export MPIMAT_CLUSTER_DIR=$DIR"
    echo "export MPIMAT_BRIDGE_IP=$BRIDGE_IP"
}

ns_pids() { ip netns pids "$1" 2>/dev/null || true; }

# Undo DIR/created in reverse: kill what runs in our namespaces, delete them,
# delete our links. Only names recorded there are touched.
down_dir() {
    [ -f "$DIR/created" ] || return 0
    local kind name pids status=0 end lines=()
    mapfile -t lines < <(tac "$DIR/created")
    for line in "${lines[@]}"; do
        read -r kind name <<<"$line"
        [ "$kind" = netns ] || continue
        [ -e "/var/run/netns/$name" ] || continue
        pids=$(ns_pids "$name")
        if [ -n "$pids" ]; then
            echo "cluster: stopping processes left in $name: $(echo $pids)" >&2
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            end=$((SECONDS + 5))
            while [ -n "$(ns_pids "$name")" ] && [ $SECONDS -lt $end ]; do sleep 0.1; done
            pids=$(ns_pids "$name")
            # shellcheck disable=SC2086
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        fi
    done
    for line in "${lines[@]}"; do
        read -r kind name <<<"$line"
        case $kind in
            netns) if [ -e "/var/run/netns/$name" ]; then ip netns del "$name" || status=1; fi ;;
            link) if ip link show "$name" >/dev/null 2>&1; then ip link del "$name" || status=1; fi ;;
        esac
    done
    [ $status = 0 ] || return 1
    rm -f "$DIR/created" "$DIR/state" "$DIR/state.tmp"
}

down() {
    while [ $# -gt 0 ]; do
        case $1 in
            --dir) DIR=${2:?}; shift 2 ;;
            --dir=*) DIR=${1#*=}; shift ;;
            *) cluster_err "unexpected argument '$1'"; usage ;;
        esac
    done
    if [ -z "$DIR" ]; then
        DIR=$(cluster_find_dir 2>/dev/null) || { echo "cluster: nothing to take down" >&2; return 0; }
    fi
    [ -d "$DIR" ] || { echo "cluster: nothing recorded in $DIR" >&2; return 0; }
    need_root
    down_dir || die "could not remove everything listed in $DIR/created"
    # Remove the directory if nothing but ours is left in it.
    rmdir "$DIR" 2>/dev/null || true
    echo "cluster: down ($DIR)" >&2
}

host_ns() {   # host_ns HOST: set NSNAME and HOSTNAME_ for HOST of the found cluster
    local i
    DIR=$(cluster_find_dir "$DIR") || exit 1
    cluster_load "$DIR" || exit 1
    i=$(cluster_host_index "$1") || exit 2
    local nsvar="NS_$i"
    NSNAME=${!nsvar}; HOSTNAME_="h$i"
}

run_exec() {
    [ $# -ge 2 ] || { cluster_err "exec needs HOST CMD..."; usage; }
    need_root
    host_ns "$1"; shift
    exec ip netns exec "$NSNAME" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$HOSTNAME_" "$@"
}

status() {
    while [ $# -gt 0 ]; do
        case $1 in --dir) DIR=${2:?}; shift 2 ;; --dir=*) DIR=${1#*=}; shift ;; *) usage ;; esac
    done
    DIR=$(cluster_find_dir "$DIR") || exit 1
    cluster_load "$DIR" || exit 1
    local i nsvar ipvar vvar state=up
    healthy || state="BROKEN (run down)"
    echo "cluster $DIR: $state, $N hosts on $SUBNET, bridge $BRIDGE $BRIDGE_IP, links $RATE"
    for ((i = 1; i <= N; i++)); do
        nsvar="NS_$i"; ipvar="IP_$i"; vvar="VETH_$i"
        printf 'h%s %s netns=%s link=%s processes=%s\n' "$i" "${!ipvar}" "${!nsvar}" "${!vvar}" \
            "$(ns_pids "${!nsvar}" | wc -l)"
    done
}

host_ip() {
    [ $# = 1 ] || usage
    host_ns "$1"
    local i ipvar
    i=$(cluster_host_index "$1"); ipvar="IP_$i"
    echo "${!ipvar}"
}

DIR=""
cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    up) up "$@" ;;
    down) down "$@" ;;
    exec) run_exec "$@" ;;
    status) status "$@" ;;
    ip) host_ip "$@" ;;
    -h|--help|help) usage 0 ;;
    "") usage ;;
    *) cluster_err "unknown command '$cmd' (up|down|exec|status|ip)"; usage ;;
esac
