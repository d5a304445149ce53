#!/usr/bin/env bash
# One command for a fresh machine: create .venv, install nncert (torch pinned), and verify the
# bundled example. Set TORCH_INDEX_URL to pick a torch index (e.g. the PyTorch CPU index).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -e '.[dev]'

for spec in tiny_sat tiny_unsat; do
    echo "\$ nncert verify vnnlib_specs/tiny.onnx vnnlib_specs/$spec.vnnlib --timeout 60" >&2
    .venv/bin/nncert verify vnnlib_specs/tiny.onnx "vnnlib_specs/$spec.vnnlib" --timeout 60
done
