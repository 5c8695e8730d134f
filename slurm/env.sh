# mpimat on Slurm: THE place to set up the job environment.
#
# Sourced by mpimat.sbatch, scaling.sbatch and collect.sbatch (not run on its own).
# Edit the defaults below for your site, or set the variables when submitting:
#   MPIMAT_VENV=$HOME/venvs/mpimat sbatch -n 8 slurm/mpimat.sbatch --size 4096
# (sbatch passes your environment to the job by default.)

# --- site configuration ------------------------------------------------------
# Virtualenv with mpimat installed; its bin/ goes first on PATH. Empty: use the
# python3 found on PATH (after loading the modules below).
: "${MPIMAT_VENV:=}"
# Environment modules to `module load` first, space-separated, e.g.
# "gcc/12 openmpi/4.1 python/3.11". Empty: load nothing.
: "${MPIMAT_MODULES:=}"
# Python interpreter (name or path) if not the venv's.
: "${MPIMAT_PYTHON:=python3}"
# How ranks are started: srun (default) or mpirun (the MPI's own launcher,
# which inside an allocation starts its daemons through Slurm itself). mpirun
# is looked up on PATH, where the venv's (the mpich wheel's) comes first; give
# a full path to use another, e.g. /opt/openmpi/bin/mpirun.
: "${MPIMAT_LAUNCHER:=srun}"
# srun --mpi plugin. auto: pmi2 for MPICH-family libraries (the `mpich` pip
# wheel, Intel MPI, MVAPICH), pmix for Open MPI. A wrong plugin makes every
# rank a singleton of size 1 (mpimat detects it and exits 2).
: "${MPIMAT_SRUN_MPI:=auto}"
# BLAS threads per rank. Empty: --cpus-per-task if given, else 1 (one thread
# per rank, so N ranks on N cores do not oversubscribe them).
: "${MPIMAT_BLAS_THREADS:=}"
# Extra mpimat arguments (split on whitespace), placed before the ones given
# on the sbatch command line.
: "${MPIMAT_ARGS:=}"
# -----------------------------------------------------------------------------

mpimat_log() { echo "mpimat-slurm: $*" >&2; }

# Load modules, activate the venv, pin BLAS threads, resolve the interpreter.
mpimat_env_setup() {
    if [ -n "$MPIMAT_MODULES" ]; then
        if ! command -v module >/dev/null 2>&1 && [ -r /etc/profile.d/modules.sh ]; then
            . /etc/profile.d/modules.sh
        fi
        command -v module >/dev/null 2>&1 || { mpimat_log "MPIMAT_MODULES is set but there is no 'module' command"; return 2; }
        # shellcheck disable=SC2086
        module load $MPIMAT_MODULES || return 2
    fi
    if [ -n "$MPIMAT_VENV" ]; then
        if [ ! -x "$MPIMAT_VENV/bin/python" ]; then
            mpimat_log "MPIMAT_VENV=$MPIMAT_VENV has no bin/python"; return 2
        fi
        export VIRTUAL_ENV=$MPIMAT_VENV
        export PATH="$MPIMAT_VENV/bin:$PATH"
        MPIMAT_PY=$MPIMAT_VENV/bin/python
    else
        MPIMAT_PY=$(command -v "$MPIMAT_PYTHON") || { mpimat_log "no $MPIMAT_PYTHON on PATH (set MPIMAT_VENV)"; return 2; }
    fi
    if [ -z "$MPIMAT_BLAS_THREADS" ]; then
        MPIMAT_BLAS_THREADS=${SLURM_CPUS_PER_TASK:-1}
    fi
    export OMP_NUM_THREADS=$MPIMAT_BLAS_THREADS
    export OPENBLAS_NUM_THREADS=$MPIMAT_BLAS_THREADS
    export MKL_NUM_THREADS=$MPIMAT_BLAS_THREADS
    export BLIS_NUM_THREADS=$MPIMAT_BLAS_THREADS
    export VECLIB_MAXIMUM_THREADS=$MPIMAT_BLAS_THREADS
}

# Which MPI library mpi4py loads (first line of MPI_Get_library_version,
# read without initializing MPI).
mpimat_mpi_library() {
    "$MPIMAT_PY" -c 'import mpi4py; mpi4py.rc.initialize = False
from mpi4py import MPI; print(MPI.Get_library_version().replace(chr(0), "").splitlines()[0].strip())' 2>/dev/null
}

# The srun --mpi plugin to use.
mpimat_srun_mpi() {
    if [ "$MPIMAT_SRUN_MPI" != auto ]; then echo "$MPIMAT_SRUN_MPI"; return; fi
    case $(mpimat_mpi_library) in
        *"Open MPI"*) echo pmix ;;
        *) echo pmi2 ;;   # MPICH, Intel MPI, MVAPICH: PMI-2
    esac
}

# mpimat_run [mpimat args...]: start `python -m mpimat` on MPIMAT_NTASKS ranks
# (default: all tasks of the allocation) and return its exit status.
mpimat_run() {
    local -a extra=() launch=()
    read -r -a extra <<<"$MPIMAT_ARGS"
    local ntasks=${MPIMAT_NTASKS:-${SLURM_NTASKS:-}}
    case $MPIMAT_LAUNCHER in
        srun)
            launch=(srun --kill-on-bad-exit=1 --mpi="$(mpimat_srun_mpi)")
            if [ -n "${MPIMAT_NTASKS:-}" ]; then
                local nodes=${SLURM_JOB_NUM_NODES:-1}
                [ "$nodes" -gt "$MPIMAT_NTASKS" ] && nodes=$MPIMAT_NTASKS
                launch+=(--ntasks="$MPIMAT_NTASKS" --nodes="$nodes")
            fi
            # Since Slurm 22.05 srun does not inherit sbatch's --cpus-per-task.
            [ -n "${SLURM_CPUS_PER_TASK:-}" ] && launch+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
            ;;
        mpirun|mpiexec|*/mpirun|*/mpiexec|*/mpiexec.*)
            launch=("$(command -v "$MPIMAT_LAUNCHER")") || { mpimat_log "no $MPIMAT_LAUNCHER found"; return 2; }
            [ -n "$ntasks" ] && launch+=(-n "$ntasks")
            ;;
        *) mpimat_log "MPIMAT_LAUNCHER must be srun, mpirun, mpiexec or a path to one, not '$MPIMAT_LAUNCHER'"; return 2 ;;
    esac
    mpimat_log "job ${SLURM_JOB_ID:-?} on ${SLURM_JOB_NODELIST:-?}: SLURM_NTASKS=${SLURM_NTASKS:-?} ranks=${ntasks:-?}" \
        "blas_threads=$MPIMAT_BLAS_THREADS python=$MPIMAT_PY mpi='$(mpimat_mpi_library)'"
    mpimat_log "launch: ${launch[*]} $MPIMAT_PY -m mpimat --blas-threads $MPIMAT_BLAS_THREADS ${extra[*]} $*"
    local rc=0
    "${launch[@]}" "$MPIMAT_PY" -m mpimat --blas-threads "$MPIMAT_BLAS_THREADS" "${extra[@]}" "$@" || rc=$?
    mpimat_log "mpimat exit status $rc"
    return "$rc"
}
