#!/usr/bin/env bash
# The README's set-up command for a fresh machine:
#   - .venv: mpimat (editable) with its test and plot extras and torch (the
#     optional kernel, pinned); the mpich wheel gives .venv/bin/mpiexec;
#   - .venv-lightning: the Lightning runtime's own venv (lightning-app 2.3.2
#     needs numpy<2), used by tests/lightning;
#   - then runs the default job on 2 ranks.
# Slurm's Debian packages are installed by scripts/slurm_cluster.sh when the
# Slurm tests bring their cluster up (root + apt-get only).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PY" --version 2>&1)"
    "$PY" -m venv .venv
fi
echo "setup: pip install -e '.[test,plot]' into .venv"
.venv/bin/python -m pip install --quiet -e ".[test,plot]"
# The optional torch kernel (--kernel torch), pinned: this version is a CPU
# build (~20 s here); an unpinned torch would pull a CUDA build of several GB.
echo "setup: pip install torch==2.13.0 into .venv (the optional kernel, tested)"
.venv/bin/python -m pip install --quiet "torch==2.13.0"
bash scripts/lightning_env.sh "$ROOT"

echo "setup: running the default job: .venv/bin/mpiexec -n 2 .venv/bin/python -m mpimat"
MPIEXEC_TIMEOUT=600 .venv/bin/mpiexec -n 2 .venv/bin/python -m mpimat
