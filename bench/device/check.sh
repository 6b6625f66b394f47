#!/usr/bin/env bash
# The one GPU check (DESIGN.md "Machines, CI and the GPU"). Built here by `make device-bundle`
# into dist/device/ (with this script), carried to the GPU machine, run there from the bundle:
#
#   run(command="bash dist/device/check.sh", carry=["dist/device"], timeout_s=540)
#
# Everything it prints goes to stdout and to $OUT/check.log; per-step JSON lands in $OUT/. Each
# step has its own time limit so one hang cannot eat the whole budget (target: < 8 minutes).
set -uo pipefail
cd "$(dirname "$0")"
B=$(pwd)
OUT=${OUT:-/tmp/llamacu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
export LLAMACU_COMMIT=$(cat COMMIT 2>/dev/null || echo unknown)

step() { printf '\n===== %s (%s) =====\n' "$1" "$(date -u +%H:%M:%S)"; }
run() { # run LIMIT_SECONDS CMD...: never fails the script, reports the status
  local lim=$1; shift
  timeout --kill-after=10 "$lim" "$@"; local rc=$?
  echo "[exit $rc: $*]"
}

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
nvidia-smi -L
echo "commit $LLAMACU_COMMIT"

step "cuda package tests"
(cd pkg/cuda && run 60 ../../cuda.test -test.v -test.count=1)

step "GPU conformance + end to end vs CPU (stories260K)"
(cd pkg/gpu && run 180 ../../gpu.test -test.v -test.count=1 -test.short)

step "kernel benchmarks: GEMV, attention, copy bandwidth (GB/s)"
(cd pkg/gpu && run 90 ../../gpu.test -test.run '^$' -test.bench . -test.benchtime 200x)

step "llamacu bench: synthetic 7B fp16 on cuda (decode and prefill)"
run 150 ./llamacu bench --synthetic 7b --dtype f16 --backend cuda -p 2048 -n 128 --batch 1,8 --depth 0,2048 \
  --reps 3 --format md --out "$OUT" --name llamacu-7b-f16-cuda

step "PyTorch/transformers peer on the same shape (eager)"
if python3 -c 'import torch, transformers' 2>/dev/null; then
  run 150 python3 hf_peer.py --shape 7b -p 2048 -n 128 --batch 1,8 --depth 0,2048 --reps 3 --mode eager \
    > "$OUT/hf-7b-eager.jsonl"
  head -c 4000 "$OUT/hf-7b-eager.jsonl"
else
  echo "torch/transformers not importable: peer skipped"
fi

step "done"
ls -la "$OUT"
