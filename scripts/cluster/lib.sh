# Shared by scripts/cluster.sh and scripts/cluster/rsh (sourced, not run).
#
# A cluster's state directory holds `state` (shell assignments written by
# `cluster.sh up`: ID, N, SUBNET, BRIDGE, BRIDGE_IP, RATE, NS_i, IP_i, VETH_i)
# and `created` (one line per object made, in order: "netns NAME" or
# "link NAME"), which `down` undoes in reverse, also after a crash.

CLUSTER_TMP=${TMPDIR:-/tmp}
CLUSTER_GLOB="$CLUSTER_TMP/mpimat-cluster.*"

cluster_err() { echo "cluster: $*" >&2; }

# cluster_find_dir [DIR]: print the state directory to use: DIR, else
# $MPIMAT_CLUSTER_DIR, else the only $TMPDIR/mpimat-cluster.* holding a state.
cluster_find_dir() {
    if [ -n "${1:-}" ]; then echo "$1"; return 0; fi
    if [ -n "${MPIMAT_CLUSTER_DIR:-}" ]; then echo "$MPIMAT_CLUSTER_DIR"; return 0; fi
    local d found=()
    for d in $CLUSTER_GLOB; do
        [ -f "$d/state" ] && found+=("$d")
    done
    case ${#found[@]} in
        1) echo "${found[0]}" ;;
        0) cluster_err "no cluster found (set MPIMAT_CLUSTER_DIR or run: scripts/cluster.sh up N)"; return 1 ;;
        *) cluster_err "several clusters found (${found[*]}): set MPIMAT_CLUSTER_DIR to one"; return 1 ;;
    esac
}

# cluster_load DIR: read DIR/state into the current shell.
cluster_load() {
    [ -f "$1/state" ] || { cluster_err "no cluster state in $1 (is it up?)"; return 1; }
    # shellcheck disable=SC1091
    . "$1/state"
}

# cluster_host_index HOST: the i of host hi (also accepts its address).
cluster_host_index() {
    local host=$1 i
    for ((i = 1; i <= N; i++)); do
        local ipvar="IP_$i"
        if [ "$host" = "h$i" ] || [ "$host" = "${!ipvar}" ]; then echo "$i"; return 0; fi
    done
    cluster_err "unknown host '$host' (this cluster has h1..h$N)"
    return 1
}
