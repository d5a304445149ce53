#!/usr/bin/env bash
# VNN-COMP: verify one instance and write the results file (verdict, then the counterexample).
# usage: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT
# The harness kills a tool at TIMEOUT + 60 s; nncert answers "timeout" on its own at
# TIMEOUT + 5 s at the latest, counting from its own start.
set -uo pipefail
if [ "$#" -ne 6 ] || [ "$1" != "v1" ]; then
    echo "usage: $0 v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT" >&2
    exit 1
fi
CATEGORY="$2" ONNX="$3" VNNLIB="$4" RESULTS="$5" TIMEOUT="$6"
TOOL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NNCERT="${NNCERT_VENV:-$TOOL_DIR/.venv}/bin/nncert"
if [ ! -x "$NNCERT" ]; then
    NNCERT="$(command -v nncert || true)"
fi
if [ -z "$NNCERT" ]; then
    echo "run_instance: nncert is not installed (run install_tool.sh v1)" >&2
    echo "error" > "$RESULTS"
    exit 1
fi
echo "run_instance: $CATEGORY $ONNX $VNNLIB timeout=$TIMEOUT" >&2
rm -f "$RESULTS"
"$NNCERT" verify "$ONNX" "$VNNLIB" --timeout "$TIMEOUT" --results-file "$RESULTS"
status=$?
# Exit 2 (bad input) and 3 (internal error) normally wrote "error" to RESULTS already.
if [ ! -s "$RESULTS" ]; then
    echo "run_instance: nncert exited with status $status and no result" >&2
    echo "error" > "$RESULTS"
fi
exit 0
