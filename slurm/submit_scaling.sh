#!/usr/bin/env bash
# Submit a strong-scaling sweep: the scaling.sbatch job array (one element per
# rank count) and the collect.sbatch job that runs after all of them succeed
# (--dependency=afterok) and writes scaling.md, scaling.csv and scaling.png.
#
#   slurm/submit_scaling.sh [--ranks 1,2,4,8] [--size N] [--dir DIR]
#                           [sbatch options...] [-- mpimat options...]
#
#   slurm/submit_scaling.sh --ranks 1,2,4,8,16 --size 8192 -p compute --time=30
#   slurm/submit_scaling.sh --ranks 4,16,64 --ntasks-per-node=16 -- --strategy tiles
#
# Every array element is allocated the largest rank count (--ntasks) and runs
# its own count on it. sbatch options (partition, time, account, nodes,
# --ntasks-per-node, ...) go to both jobs except -n/--ntasks, which is set
# here. Prints the job ids and, as its last line:
#   array=<id> collect=<id> dir=<reports directory>
# Environment (venv/modules, srun --mpi plugin, BLAS threads): slurm/env.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ranks=${MPIMAT_SCALING_RANKS:-1 2 4 8}
size=${MPIMAT_SCALING_SIZE:-4096}
dir=${MPIMAT_SCALING_DIR:-}
sbatch_opts=()
collect_opts=()   # the same options for the one-task collect job, less the node layout
mpimat_opts=()

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage ;;
        --ranks) ranks=$2; shift 2 ;;
        --ranks=*) ranks=${1#*=}; shift ;;
        --size) size=$2; shift 2 ;;
        --size=*) size=${1#*=}; shift ;;
        --dir) dir=$2; shift 2 ;;
        --dir=*) dir=${1#*=}; shift ;;
        -n|--ntasks|--ntasks=*|--array|--array=*)
            echo "submit_scaling: $1 is set from --ranks" >&2; exit 2 ;;
        -N|--nodes|--ntasks-per-node) sbatch_opts+=("$1" "$2"); shift 2 ;;
        -N*|--nodes=*|--ntasks-per-node=*) sbatch_opts+=("$1"); shift ;;
        --) shift; mpimat_opts=("$@"); break ;;
        *) sbatch_opts+=("$1"); collect_opts+=("$1"); shift ;;
    esac
done

read -r -a rank_list <<<"${ranks//,/ }"
[ "${#rank_list[@]}" -gt 0 ] || { echo "submit_scaling: empty --ranks" >&2; exit 2; }
max=0
for r in "${rank_list[@]}"; do
    [[ $r =~ ^[1-9][0-9]*$ ]] || { echo "submit_scaling: bad rank count '$r'" >&2; exit 2; }
    [ "$r" -gt "$max" ] && max=$r
done
if [ -n "$dir" ]; then
    mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
fi

export MPIMAT_SLURM_DIR=$here
export MPIMAT_SCALING_RANKS="${rank_list[*]}"
export MPIMAT_SCALING_SIZE=$size
[ -n "$dir" ] && export MPIMAT_SCALING_DIR=$dir

array=$(sbatch --parsable --array="0-$((${#rank_list[@]} - 1))" --ntasks="$max" \
    "${sbatch_opts[@]}" "$here/scaling.sbatch" "${mpimat_opts[@]}")
array=${array%%;*}
# scaling.sbatch's default reports directory, known once the array has its id.
[ -n "$dir" ] || dir=$PWD/scaling-$array
collect=$(MPIMAT_SCALING_DIR=$dir sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes --ntasks=1 \
    "${collect_opts[@]}" "$here/collect.sbatch" "$dir")
collect=${collect%%;*}
echo "submitted array job $array (ranks ${rank_list[*]}, allocation of $max tasks each) and collect job $collect" >&2
echo "results: $dir/scaling.md, $dir/scaling.png" >&2
echo "array=$array collect=$collect dir=$dir"
