#!/usr/bin/env bash
# Create (idempotently) `.venv-heat` at the repo root: Heat (ht.matmul) next to
# mpimat, for scripts/bench_heat.py only.  Neither the tests nor CI use it.
#
#   bash scripts/heat_env.sh [REPO_ROOT]      # default: the current directory
#
# Why a separate venv, and why by hand:
#   - heat 1.8.0 (the last release for Python 3.11; 1.9 needs 3.12) declares
#     torch<2.11.1 and torchvision~=0.18, but this project pins torch==2.13.0,
#     a CPU build (an unpinned torch from PyPI pulls CUDA libraries of several
#     GB).  So heat goes in with --no-deps, after torch==2.13.0, and its other
#     dependencies are named here: mpi4py>=4.1 and the `mpich` wheel (as
#     pyproject.toml does for mpimat: the venv's own mpiexec), numpy and
#     scipy~=1.14.
#   - torchvision is left out: `import heat` imports it (for heat.utils.data,
#     images and MNIST only), but PyPI's torchvision 0.28.0 (the release for
#     torch 2.13) is a CUDA build whose operators do not load into the CPU
#     torch, and then `import torchvision` itself fails ("operator
#     torchvision::nms does not exist").  bench_heat.import_heat() puts an
#     empty stand-in for torchvision in sys.modules before `import heat`;
#     ht.matmul never touches it.
#   - mpimat is installed editable with --no-deps (its dependencies are all
#     above, plus threadpoolctl), so bench_heat.py runs numpy, SUMMA and
#     ht.matmul in one process tree.
# The script then checks that no CUDA package came in and that heat imports.
# Re-running is cheap: pip is skipped while this script is unchanged.
set -euo pipefail

# shellcheck source=scripts/venv_lib.sh
source "$(dirname "$0")/venv_lib.sh"
side_venv heat "${1:-.}"
HEAT_VERSION="1.8.0"
TORCH_VERSION="2.13.0"

WANT="$(cat "$0" | cksum)"
IMPORT_HEAT="import sys; sys.path.insert(0, '$ROOT/scripts'); import bench_heat; ht = bench_heat.import_heat()"
if up_to_date "$WANT" "$IMPORT_HEAT; import mpimat, threadpoolctl"; then
    echo "heat_env: up to date (this script unchanged); skipping pip"
    SKIP_PIP=1
fi

if [ -z "${SKIP_PIP:-}" ]; then
    rm -f "$STAMP"
    # torch first and pinned in every call that could touch it: pip then fails
    # rather than replace it.
    pip_install "torch==$TORCH_VERSION"
    pip_install "torch==$TORCH_VERSION" "mpi4py>=4.1" mpich "numpy>=1.24" "scipy~=1.14" "threadpoolctl>=3"
    pip_install --no-deps "heat==$HEAT_VERSION"
    pip_install --no-deps -e "$ROOT"
fi

if "$VENV/bin/python" -m pip list 2>/dev/null | grep -i -E '^nvidia-|^triton ' >&2; then
    echo "heat_env: CUDA packages in $VENV (above): remove them (torch must be the CPU build)" >&2
    exit 1
fi
echo "heat_env: installed:"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("heat", "torch", "mpi4py", "mpich", "numpy", "scipy", "threadpoolctl", "mpimat"):
    try:
        print(f"  {name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: MISSING")
PY
"$VENV/bin/python" -c "$IMPORT_HEAT; import torch; print(f'  import heat: ok ({ht.__version__}); torch CUDA: {torch.version.cuda}')"
if [ ! -x "$VENV/bin/mpiexec" ]; then
    echo "heat_env: $VENV/bin/mpiexec missing (the mpich wheel provides it)" >&2
    exit 1
fi
echo "$WANT" > "$STAMP"
echo "heat_env: ready: python scripts/bench_heat.py (it runs under $VENV/bin/python)"
