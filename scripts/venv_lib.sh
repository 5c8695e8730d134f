# Sourced (not run) by the scripts that make a side venv next to .venv
# (lightning_env.sh, heat_env.sh).
#
# side_venv NAME [DIR]: checks that DIR (default .) is the mpimat repo root,
# sets ROOT, VENV=$ROOT/.venv-NAME, STAMP (the venv's record of its last
# good install) and PY (${PYTHON:-python3}), and creates the venv unless it
# is already there.
side_venv() {
    local name="$1"
    NAME="$name"
    ROOT="$(cd "${2:-.}" && pwd)"
    VENV="$ROOT/.venv-$name"
    STAMP="$VENV/.mpimat-$name-stamp"
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

# up_to_date WANT CHECK: true when the last good install recorded WANT (a
# checksum of what it depends on) and the python code CHECK runs in the venv,
# so pip can be skipped.
up_to_date() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$1" ] && "$VENV/bin/python" -c "$2" 2>/dev/null
}

pip_install() {
    echo "${NAME}_env: pip install $*"
    "$VENV/bin/python" -m pip install --quiet "$@"
}
