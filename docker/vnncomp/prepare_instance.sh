#!/usr/bin/env bash
# VNN-COMP: nothing to prepare (models are imported when an instance runs); check the arguments.
# usage: prepare_instance.sh v1 CATEGORY ONNX VNNLIB
set -uo pipefail
if [ "$#" -ne 4 ] || [ "$1" != "v1" ]; then
    echo "usage: $0 v1 CATEGORY ONNX VNNLIB" >&2
    exit 1
fi
for f in "$3" "$4"; do
    if [ ! -r "$f" ]; then
        echo "prepare_instance: cannot read $f" >&2
    fi
done
exit 0
