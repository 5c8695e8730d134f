#!/usr/bin/env bash
# Create (idempotently) the Lightning test virtualenv `.venv-lightning` at the repo root.
#
#   bash scripts/lightning_env.sh [REPO_ROOT]      # default: the current directory
#
# Why a separate venv: the Lightning App framework is discontinued and
# lightning-app 2.3.2 (its last release) needs numpy<2, and uvicorn<0.36
# (newer uvicorn makes an app hang at start).  mpimat is installed editable
# from the repo with its `lightning` extra, plus pytest, so that
#   .venv-lightning/bin/python -m pytest tests/lightning
# runs the Lightning tests.  Re-running is cheap: pip skips what is installed.
set -euo pipefail

# shellcheck source=scripts/venv_lib.sh
source "$(dirname "$0")/venv_lib.sh"
side_venv lightning "${1:-.}"

# Skip pip when nothing it depends on changed since the last good run.
WANT="$(cat "$ROOT/pyproject.toml" "$0" | cksum)"
if up_to_date "$WANT" "import lightning_app, mpimat.lightning, pytest"; then
    echo "lightning_env: up to date (pyproject.toml and this script unchanged); skipping pip"
    SKIP_PIP=1
fi

# The pins go in the same pip call as mpimat so the resolver keeps them.
if [ -z "${SKIP_PIP:-}" ]; then
    rm -f "$STAMP"
    pip_install -e "$ROOT[lightning]" "lightning-app==2.3.2" "numpy<2" "uvicorn<0.36" "pytest>=7"
fi

echo "lightning_env: installed:"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("mpimat", "lightning-app", "numpy", "uvicorn", "mpi4py", "mpich", "pytest"):
    try:
        print(f"  {name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: MISSING")
PY
if [ ! -x "$VENV/bin/mpiexec" ]; then
    echo "lightning_env: $VENV/bin/mpiexec missing (the mpich wheel provides it)" >&2
    exit 1
fi
echo "$WANT" > "$STAMP"
echo "lightning_env: ready: $VENV/bin/python -m pytest tests/lightning"
