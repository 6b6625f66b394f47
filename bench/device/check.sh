#!/usr/bin/env bash
# The one GPU check (DESIGN.md "Machines, CI and the GPU"). Built here by `make device-bundle`
# into dist/device/ (with this script), carried to the GPU machine, run there from the bundle:
#
#   run(command="bash dist/device/check.sh", carry=["dist/device"], timeout_s=540)
#
# Everything it prints goes to stdout and to $OUT/check.log. The device tool brings back at most 8
# files, so the steps write their JSON, CSV, Markdown and SVG into a work folder, which is packed
# into $OUT/results.tgz after every step (a step cut off by the time limit loses only itself).
# Back here, `llamacu bench summarize <files_at>` turns the folder into one table of figures
# against the targets, for bench/results/. Each
# step has its own time limit so one hang cannot eat the whole budget, and every limit is also cut
# to what is left of CHECK_BUDGET (default 450 s: the whole script stays under 8 minutes, whatever
# the steps take). Limits, and in brackets the step times of the first run on an H100
# (bench/results/gpu-h100-2026-11-28-run1/check.log: 435 s in all, the last four steps cut):
#   cuda package tests                          60 s  [4 s]
#   GPU conformance + stories260K end to end   180 s  [56 s]
#   transformers reference: hf_logits.py        60 s  [22 s, 9 of them importing torch]
#     and the gpu.test Transformers tests       45 s  [3 s]
#   kernel benchmarks                           90 s  [24 s]
#   llamacu bench, synthetic 7B                150 s  [47 s]
#   PyTorch peer (eager)                       150 s  [118 s]
#   70B TP 8, one rank alone (--rank-of 8)      90 s  [39 s]
#   prefill A/B (LLAMACU_PREFILL=simt)          60 s  [17 s]
#   decode A/B (LLAMACU_GRAPHS=0)               60 s  [20 s]
#   decode A/B (--topk 40: device top-k)        45 s  [28 s]
#   Q4_K, Q8_0 and Q4_0 A/B (synthetic 7B)   3×75 s  [Q4_K cut at 57 s by the budget: quantising
#                                                     7B on the host is slow; the others skipped]
#   70B in Q4_K on the one GPU                120 s  [skipped: no budget left]
# bench/device/followup.sh is the shorter check after a kernel change (300–330 s).
#
# `make device-dryrun` runs this same script here, on a bundle built for the emulated driver
# (-tags cudaemu: the kernels on the CPU) with a tiny shape, to catch a broken step before it
# costs GPU time: CHECK_SHAPE (synthetic model of the bench steps, default 7b), CHECK_PREFILL
# (prompt tokens, default 2048), CHECK_GEN (generated tokens, default 128), CHECK_BENCH (the
# kernel benchmarks' -test.bench, default .), CHECK_RANK_SHAPE and CHECK_RANKS (the one-rank
# step: default 70b, 8), CHECK_QSHAPE (the quantised A/B steps: default CHECK_SHAPE) and
# CHECK_KQ_SHAPE (the one-GPU Q4_K step: default 70b), CHECK_GPU_TEST_LIMIT (seconds for the GPU
# tests, default 180; emulated they need several minutes).
set -uo pipefail
cd "$(dirname "$0")"
SHAPE=${CHECK_SHAPE:-7b}
RANK_SHAPE=${CHECK_RANK_SHAPE:-70b}
QSHAPE=${CHECK_QSHAPE:-$SHAPE}       # the quantised A/B steps (k-quants need rows of 256)
KQ_SHAPE=${CHECK_KQ_SHAPE:-70b}      # the one-GPU Q4_K step
RANKS=${CHECK_RANKS:-8}
PREFILL=${CHECK_PREFILL:-2048}
KBENCH=${CHECK_BENCH:-.}
GEN=${CHECK_GEN:-128}
BUDGET=${CHECK_BUDGET:-450}
. ./lib.sh # $OUT, $R, step, run, pack; the device step

step "cuda package tests"
(cd pkg/cuda && run 60 ../../cuda.test -test.v -test.count=1)

step "GPU conformance + end to end vs CPU (stories260K)"
(cd pkg/gpu && run "${CHECK_GPU_TEST_LIMIT:-180}" ../../gpu.test -test.v -test.count=1 -test.short)

step "GPU and CPU vs PyTorch/transformers: random-init GQA LlamaForCausalLM, fp16 (hf_logits.py)"
# The model folder (~38 MB) stays out of $OUT (only 8 files of 16 MiB come back); its
# reference.json, with versions and transformers' own fp16-vs-fp32 difference, is copied there.
HFREF=${TMPDIR:-/tmp}/llamacu-hfref
rm -rf "$HFREF"
if python3 -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("torch", "transformers", "safetensors")))' 2>/dev/null; then
  run 60 env PYTHONUNBUFFERED=1 python3 hf_logits.py --out "$HFREF"
  if [ -f "$HFREF/reference.json" ]; then
    cp "$HFREF/reference.json" "$R/hf-logits-reference.json"
    (cd pkg/gpu && export LLAMACU_HF_REF="$HFREF" && run 45 ../../gpu.test -test.run Transformers -test.v -test.count=1)
  else
    echo "hf_logits.py wrote no reference: transformers comparison skipped"
  fi
else
  echo "torch/transformers/safetensors not importable: transformers reference skipped"
fi

step "kernel benchmarks: GEMV, attention, copy bandwidth (GB/s)"
(cd pkg/gpu && run 90 ../../gpu.test -test.run '^$' -test.bench "$KBENCH" -test.benchtime 200x)

step "llamacu bench: synthetic $SHAPE fp16 on cuda (decode and prefill)"
run 150 ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p "$PREFILL" -n "$GEN" --batch 1,8 --depth 0,"$PREFILL" \
  --reps 3 --format md --out "$R" --name "llamacu-$SHAPE-f16-cuda"

step "PyTorch/transformers peer on the same shape (eager)"
if python3 -c 'import torch, transformers' 2>/dev/null; then
  run 150 python3 hf_peer.py --shape "$SHAPE" -p "$PREFILL" -n "$GEN" --batch 1,8 --depth 0,"$PREFILL" --reps 3 --mode eager \
    > "$R/hf-$SHAPE-eager.jsonl"
  head -c 4000 "$R/hf-$SHAPE-eager.jsonl"
else
  echo "torch/transformers not importable: peer skipped"
fi

step "$RANK_SHAPE at TP $RANKS: one rank's share of every step timed alone on this GPU (what the budget leaves)"
run 90 ./llamacu bench --synthetic "$RANK_SHAPE" --dtype f16 --backend cuda --rank-of "$RANKS" -p 0 -n "$GEN" \
  --batch 1,8 --depth 0 --reps 2 --no-profile --format md --out "$R" --name "llamacu-$RANK_SHAPE-rank-of-$RANKS-f16-cuda"

step "prefill attention A/B: the fp32 SIMT kernel instead of tensor cores (what the budget leaves)"
run 60 env LLAMACU_PREFILL=simt ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p "$PREFILL" -n 16 \
  --batch 1 --depth 0 --reps 2 --format md --out "$R" --name "llamacu-$SHAPE-f16-cuda-simt-prefill"

step "decode A/B: launch by launch instead of CUDA graphs (what the budget leaves)"
run 60 env LLAMACU_GRAPHS=0 ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p 16 -n "$GEN" \
  --batch 1 --depth 0 --reps 2 --format md --out "$R" --name "llamacu-$SHAPE-f16-cuda-no-graphs"

step "decode A/B: each row's 40 best logits selected on the device instead of whole rows (what the budget leaves)"
run 45 ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p 16 -n "$GEN" --topk 40 \
  --batch 1,8 --depth 0 --reps 2 --format md --out "$R" --name "llamacu-$SHAPE-f16-cuda-topk40"

for q in q4_k q8_0 q4_0; do
  step "$q A/B: the same shape with $q weights, kept quantised on the device (what the budget leaves)"
  run 75 ./llamacu bench --synthetic "$QSHAPE" --dtype "$q" --backend cuda -p "$PREFILL" -n "$GEN" \
    --batch 1,8 --depth 0 --reps 2 --no-profile --format md --out "$R" --name "llamacu-$QSHAPE-$q-cuda"
done

step "70B with Q4_K weights on this one GPU, as a Q4_K_M download would run (what the budget leaves)"
run 120 ./llamacu bench --synthetic "$KQ_SHAPE" --dtype q4_k --backend cuda -p 512 -n 64 \
  --batch 1 --depth 0 --reps 1 --no-profile --format md --out "$R" --name "llamacu-$KQ_SHAPE-q4k-1gpu"

step "done"
ls -la "$R" "$OUT"
