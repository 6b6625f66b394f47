#!/usr/bin/env bash
# The GPU check after a kernel change, for a lease too short for check.sh: the GPU tests (the
# default kernels against the CPU and v1; attention also at LLaMA sizes), the kernel benchmarks
# that compare the new versions with the old (GEMV v4 ÷ v3 ÷ v2 at 1, 4 and 8 rows, and each
# split; decode attention v5 (tensor cores, session 13) ÷ v4 ÷ v3 ÷ v2, and the default's splits
# aimed at 2, 3 and 6 blocks per SM; prefill attention v4 ÷ v3 ÷ SIMT; fused gate/up; q/k/v with
# RoPE and the KV store fused ÷ separate), the synthetic 7B decode and prefill with the default
# kernels, ncu's time for every kernel of one decode step, and, in the same run, the 7B with
# changes undone or added (LLAMACU_NORM=separate: the residual add and RMSNorm in their own
# launch instead of folded into the one-row q/k/v and gate/up GEMVs (session 14), at depth 0 and
# 2048; LLAMACU_DECODE=v5: decode attention v5 at 7B's one query head per KV
# head too, at depth 0 and 2048; LLAMACU_GEMV=v3: GEMV v3 for 8 decode rows instead of session 12's tensor-core v4),
# prefill in one step (--ubatch 2048) against steps of 512, 70B's one-rank-of-TP-8 step with the
# default kernels (decode attention v5 at G = 8, the norms folded), ncu's time for every kernel of
# its step, with the norms separate, with v4 (LLAMACU_DECODE=v4) and with PDL, and
# an ncu look at decode attention v5 (70B shape) and v4 (7B), with what is left. (Run 3 measured
# the A/Bs dropped here: LLAMACU_PREFILL=v3, LLAMACU_INTERMEDIATES=f32, PDL on 7B, LLAMACU_DECODE=v3,
# LLAMACU_ROPE=separate.)
# The GPU tests include PDL's (TestConformance/fast/pdl, TestStories260K/pdl, TestGraphs/pdl):
# if they fail, PDL stays off. Built by `make device-bundle`, run from the bundle:
#
#   run(command="bash dist/device/followup.sh", carry=["dist/device"], timeout_s=440)
#
# Output as check.sh's ($OUT/check.log, $OUT/results.tgz); `llamacu bench summarize` reads it.
# CHECK_BUDGET (default 400 s: with the machine's start, about 10 of a session's 15 device
# minutes), CHECK_SHAPE, CHECK_PREFILL, CHECK_GEN, CHECK_BENCH, CHECK_RANK_SHAPE, CHECK_RANKS and
# CHECK_GPU_TEST_LIMIT as in check.sh (`make device-dryrun DRYRUN_SCRIPT=followup.sh` rehearses
# it on the emulated driver).
set -uo pipefail
cd "$(dirname "$0")"
SHAPE=${CHECK_SHAPE:-7b}
RANK_SHAPE=${CHECK_RANK_SHAPE:-70b}
RANKS=${CHECK_RANKS:-8}
PREFILL=${CHECK_PREFILL:-2048}
KBENCH=${CHECK_BENCH:-'^Benchmark(Copy|GEMV|GEMVQuant|AttentionDecode|AttentionPrefill|GateUp|QKVRoPE)$'}
GEN=${CHECK_GEN:-128}
BUDGET=${CHECK_BUDGET:-400}
. ./lib.sh # $OUT, $R, step, run, pack; the device step

step "GPU tests (-short): conformance, matmul paths at 7B shapes, GEMV splits, fused ops, end to end"
(cd pkg/gpu && run "${CHECK_GPU_TEST_LIMIT:-240}" ../../gpu.test -test.count=1 -test.short)

step "attention at LLaMA sizes: the default kernels (decode v4 and v5, prefill v4) against the CPU at 7B's and 70B's shapes, 4096-token contexts"
(cd pkg/gpu && run 40 ../../gpu.test -test.count=1 -test.v -test.run 'TestConformance/^fast$/^kv-f16$/^Attention$/^llama')

step "kernel benchmarks: copy, GEMV v3/v4/v2/splits, quantised GEMV (Q8_0, Q4_0 v4 ÷ v2 at 8 rows), decode attention v5/v4/v3/v2, prefill attention v4/v3/SIMT, gate/up, q/k/v + RoPE fused/separate"
(cd pkg/gpu && run 110 ../../gpu.test -test.run '^$' -test.bench "$KBENCH" -test.benchtime 200x)

step "llamacu bench: synthetic $SHAPE fp16 on cuda, the default kernels"
run 60 ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p "$PREFILL" -n "$GEN" --batch 1,8 --depth 0,"$PREFILL" \
  --reps 3 --no-profile --format md --out "$R" --name "llamacu-$SHAPE-f16-cuda"

step "ncu: every kernel of one $SHAPE decode step at depth 0 and $PREFILL, time per kernel name (their sum against the step's wall time above is what launches and gaps cost)"
if command -v ncu >/dev/null; then
  run 40 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
    ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p 0 -n 1 --batch 1 --depth 0,"$PREFILL" \
    --reps 1 --warmup 0 --no-profile --format md
else
  echo "no ncu on the PATH"
fi

step "decode A/B: the residual add and RMSNorm in their own launch instead of folded into the q/k/v and gate/up GEMVs, same shape (LLAMACU_NORM=separate)"
run 35 env LLAMACU_NORM=separate ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p 16 -n "$GEN" \
  --batch 1 --depth 0,"$PREFILL" --reps 3 --no-profile --format md --out "$R" --name "llamacu-$SHAPE-f16-cuda-separate-norm"

step "decode A/B: decode attention v5 (tensor cores) at one query head per KV head too, same shape (LLAMACU_DECODE=v5)"
run 35 env LLAMACU_DECODE=v5 ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p 16 -n "$GEN" \
  --batch 1,8 --depth 0,"$PREFILL" --reps 3 --no-profile --format md --out "$R" --name "llamacu-$SHAPE-f16-cuda-decode-v5"

step "decode A/B: GEMV v3 for steps of 2–8 rows instead of v4 (tensor cores), same shape (LLAMACU_GEMV=v3)"
run 30 env LLAMACU_GEMV=v3 ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p 16 -n "$GEN" \
  --batch 8 --depth 0 --reps 3 --no-profile --format md --out "$R" --name "llamacu-$SHAPE-f16-cuda-gemv-v3"

step "prefill A/B: the whole prompt in one forward step (--ubatch $PREFILL instead of 512)"
run 40 ./llamacu bench --synthetic "$SHAPE" --dtype f16 --backend cuda -p "$PREFILL" -n 0 --ubatch "$PREFILL" \
  --batch 1 --depth 0 --reps 3 --no-profile --format md --out "$R" --name "llamacu-$SHAPE-f16-cuda-ubatch$PREFILL"

step "$RANK_SHAPE at TP $RANKS: one rank's share of every step timed alone on this GPU"
run 50 ./llamacu bench --synthetic "$RANK_SHAPE" --dtype f16 --backend cuda --rank-of "$RANKS" -p 0 -n "$GEN" \
  --batch 1,8 --depth 0 --reps 2 --no-profile --format md --out "$R" --name "llamacu-$RANK_SHAPE-rank-of-$RANKS-f16-cuda"

step "ncu: every kernel of one $RANK_SHAPE rank-of-$RANKS decode step at depth 0 (where its step loses against its bytes ÷ the copy bandwidth)"
if command -v ncu >/dev/null; then
  run 40 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
    ./llamacu bench --synthetic "$RANK_SHAPE" --dtype f16 --backend cuda --rank-of "$RANKS" -p 0 -n 1 --batch 1 --depth 0 \
    --reps 1 --warmup 0 --no-profile --format md
else
  echo "no ncu on the PATH"
fi

step "$RANK_SHAPE at TP $RANKS, one rank alone, the norms in their own launch (LLAMACU_NORM=separate)"
run 35 env LLAMACU_NORM=separate ./llamacu bench --synthetic "$RANK_SHAPE" --dtype f16 --backend cuda --rank-of "$RANKS" -p 0 -n "$GEN" \
  --batch 1 --depth 0 --reps 2 --no-profile --format md --out "$R" --name "llamacu-$RANK_SHAPE-rank-of-$RANKS-f16-cuda-separate-norm"

step "$RANK_SHAPE at TP $RANKS, one rank alone, decode attention v4 instead of v5 (LLAMACU_DECODE=v4)"
run 50 env LLAMACU_DECODE=v4 ./llamacu bench --synthetic "$RANK_SHAPE" --dtype f16 --backend cuda --rank-of "$RANKS" -p 0 -n "$GEN" \
  --batch 1,8 --depth 0 --reps 2 --no-profile --format md --out "$R" --name "llamacu-$RANK_SHAPE-rank-of-$RANKS-f16-cuda-decode-v4"

step "$RANK_SHAPE at TP $RANKS, one rank alone, with programmatic dependent launch (LLAMACU_PDL=1)"
run 50 env LLAMACU_PDL=1 ./llamacu bench --synthetic "$RANK_SHAPE" --dtype f16 --backend cuda --rank-of "$RANKS" -p 0 -n "$GEN" \
  --batch 1,8 --depth 0 --reps 2 --no-profile --format md --out "$R" --name "llamacu-$RANK_SHAPE-rank-of-$RANKS-f16-cuda-pdl"

step "ncu: what limits decode attention v5 at the 70B shape and v4 at 7B's, one row (what the budget leaves)"
if command -v ncu >/dev/null; then
  for k in 'attention_decode_v5_f16_hd128 ^BenchmarkAttentionDecode$/^70B$' 'attention_decode_v4_f16_hd128_g1 ^BenchmarkAttentionDecode$/^7B$'; do
    set -- $k
    (cd pkg/gpu && run 30 ncu --clock-control none --kernel-name "$1" --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats \
      ../../gpu.test -test.run '^$' -test.bench "$2" -test.benchtime 1x)
  done
else
  echo "no ncu on the PATH"
fi

step "done"
ls -la "$R" "$OUT"
