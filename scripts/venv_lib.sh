# Sourced (not run) by the scripts that make a side venv next to .venv
# (lightning_env.sh, heat_env.sh).
#
# side_venv NAME [DIR]: checks that DIR (default .) is the mpimat repo root,
# sets ROOT, VENV=$ROOT/.venv-NAME and PY (${PYTHON:-python3}), and creates
# the venv unless it is already there.
side_venv() {
    local name="$1"
    ROOT="$(cd "${2:-.}" && pwd)"
    VENV="$ROOT/.venv-$name"
    PY="${PYTHON:-python3}"
    if [ ! -f "$ROOT/pyproject.toml" ] || [ ! -d "$ROOT/mpimat" ]; then
        echo "${name}_env: $ROOT is not the mpimat repo root" >&2
        exit 2
    fi
    if [ -x "$VENV/bin/python" ]; then
        echo "${name}_env: reusing $VENV"
    else
        echo "${name}_env: creating $VENV with $("$PY" --version 2>&1)"
        "$PY" -m venv "$VENV"
    fi
}
