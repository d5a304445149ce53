#!/usr/bin/env bash
# VNN-COMP: install nncert into a virtual environment beside the sources.
# usage: install_tool.sh v1
# Environment: PYTHON (default python3), NNCERT_VENV (default <repo>/.venv),
#   TORCH_INDEX_URL (e.g. the PyTorch CPU index on a machine without a GPU; default: the
#   configured index, which on Linux gives the CUDA build of torch 2.13.0).
set -euo pipefail
if [ "${1:-}" != "v1" ]; then
    echo "usage: $0 v1" >&2
    exit 1
fi
TOOL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${NNCERT_VENV:-$TOOL_DIR/.venv}"

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
# torch first and pinned: an unpinned torch would pull whatever build is newest.
"$VENV/bin/python" -m pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$VENV/bin/python" -m pip install "$TOOL_DIR"
"$VENV/bin/nncert" --version
