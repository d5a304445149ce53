#!/usr/bin/env bash
# The GPU half of the scale checks (issue 17), as one prepared run on a machine with a CUDA
# device (a lent device is held for minutes, so every stage is bounded by `timeout` and writes
# its own log as it goes; one that overruns does not take the others' time):
#
#   bash benchmarks/gpu_check.sh SETS OUT [BASELINE_TREE]
#
# SETS: a folder of benchmark folders (instances.csv, expected.csv, onnx/, vnnlib/), e.g. the
# line-3 sample of the scale set, cifar10_resnet, oval21 and marabou-cifar10; OUT: where the logs
# and csvs go; BASELINE_TREE: a checkout whose bound passes are timed beside this one's.
# Stages: info (device, torch, memory), tests (pytest -m gpu), line3 (nncert bench on the
# device, JOBS workers, CAP s per instance), compare (one crown/alpha pass on the device against
# the baseline), devices (one CROWN pass per model on the CPU and on the device: the data for
# verifier/device_choice.py; MODELS, a regex, picks them). DEVICE=cpu dry-runs the script
# without a GPU.
set -u
sets=$1 out=$2 base=${3:-}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
jobs=${JOBS:-12}
cap=${CAP:-120}
mkdir -p "$out"

stage() {  # stage NAME LIMIT_S COMMAND...: run COMMAND into OUT/NAME.txt, at most LIMIT_S
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (at most ${limit} s)"
    start=$(date +%s)
    timeout -k 5 "$limit" "$@" >"$out/$name.txt" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - start)) s"
    tail -n 25 "$out/$name.txt"
}

info() {
    nvidia-smi -L 2>&1 || true
    "$py" -c 'import torch, onnxruntime; print("torch", torch.__version__, "cuda",
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
"onnxruntime", onnxruntime.__version__)'
    grep -E "MemTotal|MemAvailable" /proc/meminfo
    nproc
}

models=${MODELS:-'SIGMOID|resnet_4b|cifar_wide|cifar10_large|4cnn_ry_6_1_|unet_simp|patch-1|mnist-set|TinyYOLO'}
benchmarks=$(cd "$sets" && ls -d */ | tr -d /)
info >"$out/info.txt" 2>&1
cat "$out/info.txt"
stage tests "${TESTS_S:-120}" "$py" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
stage line3 "${LINE3_S:-290}" "$py" -m verifier.cli bench "$sets" --isolate --jobs "$jobs" \
    --device "$device" --timeout-cap "$cap" --out "$out/line3.csv"
if [ -n "$base" ]; then
    stage compare "${COMPARE_S:-110}" "$py" benchmarks/bound_bench.py --root "$sets" \
        --benchmarks eran cifar10_resnet yolo_2023 --models 'SIGMOID|resnet_4b|TinyYOLO' \
        --passes crown alpha alphaibp --devices "$device" --compare "$base" --limit 40 \
        --out "$out/compare.csv"
fi
devices=cpu
[ "$device" = cuda ] && devices="cpu cuda"
# shellcheck disable=SC2086 # (word splitting wanted: lists)
stage devices "${DEVICES_S:-90}" "$py" benchmarks/bound_bench.py --root "$sets" \
    --benchmarks $benchmarks --models "$models" --passes crown --devices $devices --limit 20 \
    --out "$out/devices.csv"
