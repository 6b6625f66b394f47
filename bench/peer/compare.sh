#!/usr/bin/env bash
# compare.sh: CPU decode throughput of llamacu vs llama.cpp (the prebuilt CPU build shipped by
# the npm package node-llama-cpp) on the same GGUF file, same threads, same prompt, greedy,
# alternating the two engines round by round (the machines are noisy; the order flips each round).
#
# Prerequisites (none of them inside the repository):
#   mkdir -p /tmp/peer && (cd /tmp/peer && npm init -y && npm install node-llama-cpp)
#   go build -o /tmp/llamacu ./cmd/llamacu
#   go run ./bench/peer/mkgguf -preset 110m -dtype f32 -out /tmp/peer/synth110m-f32.gguf
# Usage, from the repository root:
#   bench/peer/compare.sh [OUT_PREFIX]     (default bench/results/cpu-vs-llamacpp-YYYY-MM-DD)
# Environment: ROUNDS (5), THREADS (2), MAX_TOKENS (128), MODEL, LLAMACU (/tmp/llamacu),
#   PEER_DIR (/tmp/peer), PROMPT (16 tokens with BOS in the LLaMA 2 vocabulary),
#   QUIET_PSI (10) and QUIET_MAX_S (240): before each run, wait up to QUIET_MAX_S seconds for
#   psi10 to fall below QUIET_PSI (other work on a shared machine; llama.cpp's spinning thread
#   barriers make it collapse when its threads are descheduled). QUIET_MAX_S=0 disables waiting.
# Writes OUT_PREFIX.md (table and summary, also printed) and OUT_PREFIX.log (raw output).
#
# Each llama.cpp run is a fresh node process: one untimed 8-token warm-up, then one timed
# repetition (bench/peer/decode-bench.mjs). Each llamacu run is a fresh `llamacu run`. Both
# report prompt tok/s (prefill incl. the first token's logits) and decode tok/s (the other
# MAX_TOKENS-1 tokens over their time). For llama.cpp the table also gives its own timers
# (llama_perf_context_print), which leave out node-llama-cpp's per-token overhead. cpu/wall is the process's CPU time over its wall time:
# about THREADS on an idle machine, lower when other work shares the cores. load1 and psi10
# (/proc/pressure/cpu "some avg10", % of time tasks waited for a CPU) are read before each run.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-2}
MAX_TOKENS=${MAX_TOKENS:-128}
MODEL=${MODEL:-/tmp/peer/synth110m-f32.gguf}
LLAMACU=${LLAMACU:-/tmp/llamacu}
export PEER_DIR=${PEER_DIR:-/tmp/peer}
PROMPT=${PROMPT:-"Once upon a time, there was a little girl named Lily who loved"}
QUIET_PSI=${QUIET_PSI:-10}
QUIET_MAX_S=${QUIET_MAX_S:-240}
OUT=${1:-bench/results/cpu-vs-llamacpp-$(date +%F)}

for f in "$MODEL" "$LLAMACU" "$PEER_DIR/node_modules/node-llama-cpp/package.json"; do
	[ -e "$f" ] || { echo "compare.sh: missing $f (see the prerequisites at the top of $0)" >&2; exit 1; }
done
mkdir -p "$(dirname "$OUT")"
LOG=$OUT.log
REC=$(mktemp)
trap 'rm -f "$REC" "$REC.err" "$REC.out"' EXIT
: >"$LOG"

load1() { cut -d' ' -f1 /proc/loadavg; }
psi10() { sed -n 's/^some avg10=\([0-9.]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null || echo 0; }
# wait_quiet: sleep until psi10 < QUIET_PSI or QUIET_MAX_S has passed; logs the wait.
wait_quiet() {
	local waited=0
	while [ "$waited" -lt "$QUIET_MAX_S" ] && awk -v p="$(psi10)" -v q="$QUIET_PSI" 'BEGIN{exit !(p >= q)}'; do
		sleep 5
		waited=$((waited + 5))
	done
	echo "waited ${waited}s for quiet (psi10 $(psi10), load1 $(load1))" >>"$LOG"
}

HEADER=$(
	echo "# compare.sh $(date -u +%FT%TZ)"
	echo "machine: $(nproc) CPUs; $(lscpu | grep 'Model name' | sed 's/  */ /g'); $(uname -srm)"
	echo "memory: $(free -g | awk '/Mem:/{print $2" GiB"}')"
	echo "llamacu: $LLAMACU, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)'), $(go version 2>/dev/null || echo 'go ?')"
	echo "llama.cpp: node-llama-cpp $(node -p "require('$PEER_DIR/node_modules/node-llama-cpp/package.json').version"), llama.cpp $(node -p "require('$PEER_DIR/node_modules/node-llama-cpp/llama/llama.cpp.info.json').tag") prebuilt CPU binaries, node $(node --version)"
	echo "model: $MODEL ($(stat -c %s "$MODEL") bytes)"
	echo "threads $THREADS, max tokens $MAX_TOKENS, greedy, rounds $ROUNDS, quiet wait psi10 < $QUIET_PSI (max ${QUIET_MAX_S}s), prompt: $PROMPT"
)
echo "$HEADER" | tee -a "$LOG" >&2

run_llamacpp() { # round
	local l p
	wait_quiet
	l=$(load1) p=$(psi10)
	echo "## round $1 llama.cpp: node bench/peer/decode-bench.mjs --model $MODEL --threads $THREADS --max-tokens $MAX_TOKENS --reps 1 --warmup 1 --json --prompt \"\$PROMPT\"" >>"$LOG"
	node bench/peer/decode-bench.mjs --model "$MODEL" --threads "$THREADS" --max-tokens "$MAX_TOKENS" \
		--reps 1 --warmup 1 --json --prompt "$PROMPT" 2>>"$LOG" | tee -a "$LOG" |
		node -e '
			const [round, l, p] = process.argv.slice(1);
			let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
				const r = JSON.parse(s.trim().split("\n").pop());
				console.log(JSON.stringify({engine: "llama.cpp", round: +round, prompt_tps: r.prompt_tps, decode_tps: r.decode_tps,
					generated: r.generated, cpu_per_wall: r.cpu_per_wall, load1: +l, psi10: +p, text: r.text,
					llama_prompt_tps: r.llama_prompt_tps, llama_decode_tps: r.llama_decode_tps}));
			});' "$1" "$l" "$p" >>"$REC"
}

run_llamacu() { # round
	local l p
	wait_quiet
	l=$(load1) p=$(psi10)
	echo "## round $1 llamacu: $LLAMACU run --model $MODEL --threads $THREADS --temperature 0 --max-tokens $MAX_TOKENS \"\$PROMPT\"" >>"$LOG"
	/usr/bin/time -f "time: wall %e user %U sys %S" "$LLAMACU" run --model "$MODEL" --threads "$THREADS" \
		--temperature 0 --max-tokens "$MAX_TOKENS" "$PROMPT" >"$REC.out" 2>"$REC.err"
	{ echo "stdout: $(cat "$REC.out")"; cat "$REC.err"; } >>"$LOG"
	node -e '
		const fs = require("fs");
		const [round, l, p, errPath, outPath] = process.argv.slice(1);
		const err = fs.readFileSync(errPath, "utf8");
		const m = err.match(/prompt: (\d+) tokens in .*?\(([\d.]+) tok\/s\); generated (\d+) tokens in .*?\(([\d.]+) tok\/s decode\)/);
		const t = err.match(/time: wall ([\d.]+) user ([\d.]+) sys ([\d.]+)/);
		if (!m || !t) { console.error("compare.sh: cannot parse llamacu output:\n" + err); process.exit(1); }
		console.log(JSON.stringify({engine: "llamacu", round: +round, prompt_tps: +m[2], decode_tps: +m[4], generated: +m[3],
			cpu_per_wall: (+t[2] + +t[3]) / +t[1], load1: +l, psi10: +p, text: fs.readFileSync(outPath, "utf8")}));
	' "$1" "$l" "$p" "$REC.err" "$REC.out" >>"$REC"
}

for r in $(seq 1 "$ROUNDS"); do
	echo "round $r/$ROUNDS" >&2
	if [ $((r % 2)) -eq 1 ]; then run_llamacpp "$r"; run_llamacu "$r"; else run_llamacu "$r"; run_llamacpp "$r"; fi
done

{
	echo "## records"
	cat "$REC"
} >>"$LOG"

node -e '
	const fs = require("fs");
	const [recPath, header] = process.argv.slice(1);
	const recs = fs.readFileSync(recPath, "utf8").trim().split("\n").map((l) => JSON.parse(l));
	const f = (x, d = 1) => x.toFixed(d);
	const stat = (xs) => {
		const m = xs.reduce((a, b) => a + b, 0) / xs.length;
		const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0;
		return {m, sd};
	};
	const out = [];
	out.push(header, "");
	out.push("| round | engine | prompt tok/s | decode tok/s | llama.cpp timers: prompt / decode tok/s | generated | cpu/wall | load1 | psi10 |");
	out.push("|---|---|---:|---:|---:|---:|---:|---:|---:|");
	const lt = (r) => r.llama_decode_tps == null ? "—" : `${f(r.llama_prompt_tps)} / ${f(r.llama_decode_tps, 2)}`;
	for (const r of recs) out.push(`| ${r.round} | ${r.engine} | ${f(r.prompt_tps)} | ${f(r.decode_tps, 2)} | ${lt(r)} | ${r.generated} | ${f(r.cpu_per_wall, 2)} | ${f(r.load1, 2)} | ${f(r.psi10, 1)} |`);
	out.push("");
	const by = (e) => recs.filter((r) => r.engine === e);
	const A = by("llamacu"), B = by("llama.cpp");
	out.push("| engine | runs | prompt tok/s (mean ± sd) | decode tok/s (mean ± sd) | decode tok/s (median) | decode tok/s (best) |");
	out.push("|---|---:|---:|---:|---:|---:|");
	const med = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
	for (const [name, rs] of [["llamacu", A], ["llama.cpp", B]]) {
		const p = stat(rs.map((r) => r.prompt_tps)), d = stat(rs.map((r) => r.decode_tps));
		out.push(`| ${name} | ${rs.length} | ${f(p.m)} ± ${f(p.sd)} | ${f(d.m, 2)} ± ${f(d.sd, 2)} | ${f(med(rs.map((r) => r.decode_tps)), 2)} | ${f(Math.max(...rs.map((r) => r.decode_tps)), 2)} |`);
	}
	out.push("");
	const ratios = A.map((a) => { const b = B.find((x) => x.round === a.round); return a.decode_tps / b.decode_tps; });
	const gm = Math.exp(ratios.reduce((s, x) => s + Math.log(x), 0) / ratios.length);
	const dA = stat(A.map((r) => r.decode_tps)).m, dB = stat(B.map((r) => r.decode_tps)).m;
	const pA = stat(A.map((r) => r.prompt_tps)).m, pB = stat(B.map((r) => r.prompt_tps)).m;
	out.push(`decode ratio llamacu/llama.cpp: ${f(dA / dB, 2)} (ratio of means); per round ${ratios.map((x) => f(x, 2)).join(", ")}; geometric mean ${f(gm, 2)}`);
	const best = (rs, k) => Math.max(...rs.map((r) => r[k]));
	out.push(`decode ratio, best run vs best run (least disturbed by other load): ${f(best(A, "decode_tps") / best(B, "decode_tps"), 2)}`);
	out.push(`prompt ratio llamacu/llama.cpp: ${f(pA / pB, 2)} (ratio of means); best vs best ${f(best(A, "prompt_tps") / best(B, "prompt_tps"), 2)}`);
	const lB = B.filter((r) => r.llama_decode_tps != null);
	if (lB.length) {
		const ld = stat(lB.map((r) => r.llama_decode_tps)), lp = stat(lB.map((r) => r.llama_prompt_tps));
		out.push(`llama.cpp by its own timers (no JavaScript binding overhead): prompt ${f(lp.m)} ± ${f(lp.sd)}, decode ${f(ld.m, 2)} ± ${f(ld.sd, 2)} tok/s; decode ratio llamacu/llama.cpp-timers ${f(dA / ld.m, 2)} (ratio of means)`);
	}
	const same = A.map((a) => { const b = B.find((x) => x.round === a.round); return a.text === b.text; });
	out.push(`greedy text identical in ${same.filter(Boolean).length}/${same.length} rounds`);
	console.log(out.join("\n"));
' "$REC" "$(echo "$HEADER" | sed 's/^/    /')" | tee "$OUT.md"
echo "wrote $OUT.md and $LOG" >&2
