#!/usr/bin/env bash
# The README's test command: every suite, each under a hard timeout.
#   1. unit, CLI end-to-end and Slurm tests (serial pytest; the CLI tests start
#      their own mpiexec subprocesses);
#   2. the pytest-mpi suite under mpiexec with 1, 2, 3 and 4 ranks;
#   3. the Lightning tests in .venv-lightning.
# Ends with one line "N passed, N failed, N skipped" over all suites; exits
# non-zero if any suite failed, timed out, or collected no test (pytest's
# exit 5 is a failure here, never silently a success).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="${MPIMAT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
MPIEXEC="$VENV/bin/mpiexec"
LPY="$ROOT/.venv-lightning/bin/python"
REPORTS="$(mktemp -d)"
trap 'rm -rf "$REPORTS"' EXIT
failed_suites=()

for need in "$PY" "$MPIEXEC" "$LPY"; do
    if [ ! -x "$need" ]; then
        echo "test: $need is missing: run the README's set-up command (bash scripts/setup.sh) first" >&2
        exit 2
    fi
done

suite() {  # suite NAME COMMAND...
    local name=$1 rc
    shift
    echo "=== $name: $*"
    "$@"
    rc=$?
    case $rc in
        0) ;;
        5) echo "test: $name collected no tests (pytest exit 5)"; failed_suites+=("$name") ;;
        124) echo "test: $name timed out"; failed_suites+=("$name") ;;
        *) echo "test: $name failed (exit $rc)"; failed_suites+=("$name") ;;
    esac
}

PYTEST=(-m pytest -q -p no:cacheprovider)

suite serial timeout 2700 "$PY" "${PYTEST[@]}" --junitxml="$REPORTS/serial.xml" tests \
    --ignore=tests/mpi --ignore=tests/lightning

# pytest-mpi: every rank runs the same tests; only rank 0 writes the JUnit
# file (MPMD launch), but a failure on any rank fails mpiexec.
for k in 1 2 3 4; do
    cmd=("$MPIEXEC" -n 1 "$PY" "${PYTEST[@]}" --with-mpi --junitxml="$REPORTS/mpi-$k.xml" tests/mpi)
    if [ "$k" -gt 1 ]; then
        cmd+=(: -n $((k - 1)) "$PY" "${PYTEST[@]}" --with-mpi tests/mpi)
    fi
    suite "mpi-$k" env MPIEXEC_TIMEOUT=900 timeout 960 "${cmd[@]}"
done

suite lightning timeout 1500 "$LPY" "${PYTEST[@]}" --junitxml="$REPORTS/lightning.xml" tests/lightning

"$PY" - "$REPORTS" "${failed_suites[@]+"${failed_suites[@]}"}" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

reports, failed_suites = Path(sys.argv[1]), sys.argv[2:]
passed = failed = skipped = 0
for suite in ["serial", "mpi-1", "mpi-2", "mpi-3", "mpi-4", "lightning"]:
    xml = reports / f"{suite}.xml"
    fails = 0
    if xml.exists():
        for s in ET.parse(xml).getroot().iter("testsuite"):
            f = int(s.get("failures", 0)) + int(s.get("errors", 0))
            k = int(s.get("skipped", 0))
            passed += int(s.get("tests", 0)) - f - k
            skipped += k
            fails += f
    if suite in failed_suites and fails == 0:
        # Failed with no failing test in its report: a crash, a timeout, no
        # tests collected, or a failure on a rank other than 0.
        fails = 1
    failed += fails
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
PYEOF
