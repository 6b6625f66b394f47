// decode-bench.mjs: time llama.cpp (CPU build shipped by node-llama-cpp) on a GGUF model:
// prompt (prefill) and greedy decode throughput, the way llamacu's `run` reports them.
//
//   [PEER_DIR=/tmp/peer] node bench/peer/decode-bench.mjs [--model M] [--threads 2]
//       [--prompt TEXT] [--max-tokens 128] [--reps 3] [--warmup 1] [--ctx 1024] [--json]
//
// Per repetition, a fresh context: prompt time = from submitting BOS+prompt until the first
// generated token (prefill plus the first token's logits and argmax); decode = the remaining
// max-tokens-1 steps over their time. End-of-generation tokens do not stop the run (random
// weights emit them at random), so every repetition decodes exactly max-tokens tokens.
// --warmup runs that many untimed repetitions of 8 tokens first (page cache, CPU backend set-up).
// Output: one line per repetition and a summary (mean ± sample stddev); --json prints one JSON
// object per repetition instead (for compare.sh).
import {nlc, nlcVersion, llamaInfo} from "./peer.mjs";

const {getLlama, LlamaLogLevel} = nlc;
const llamaTag = llamaInfo.tag;

const opts = {model: "/tmp/peer/synth110m-f32.gguf", threads: 2, prompt: "Once upon a time, there was a little girl named Lily who loved", "max-tokens": 128, reps: 3, warmup: 1, ctx: 1024, json: false};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, "");
    if (!(k in opts)) throw new Error(`unknown flag ${argv[i]}`);
    if (typeof opts[k] === "boolean") opts[k] = true;
    else opts[k] = typeof opts[k] === "number" ? Number(argv[++i]) : argv[++i];
}

// llama.cpp's own timers (llama_perf_context_print, through the logger) give prefill and decode
// rates without the JavaScript binding's per-token overhead; both are reported.
const perfLines = [];
const llama = await getLlama({
    gpu: false, build: "never", logLevel: LlamaLogLevel.info, maxThreads: opts.threads,
    logger: (level, msg) => {
        if (msg.includes("llama_perf_context_print")) perfLines.push(msg);
        else if (level === "error" || level === "fatal") console.error(msg);
    },
});
const model = await llama.loadModel({modelPath: opts.model, gpuLayers: 0, useMmap: true});
const bos = model.tokens.bos;
const promptIds = [...(model.tokens.shouldPrependBosToken && bos != null ? [bos] : []), ...model.tokenize(opts.prompt, false)];
if (!opts.json) {
    console.log(`llama.cpp ${llamaTag} via node-llama-cpp ${nlcVersion}, CPU, ${opts.threads} threads; model ${opts.model}`);
    console.log(`llama.cpp system info: ${llama.systemInfo.trim()}`);
    console.log(`prompt ${JSON.stringify(opts.prompt)}: ${promptIds.length} tokens incl. BOS; greedy ${opts["max-tokens"]} tokens; ${opts.reps} reps`);
}

async function warm() {
    const context = await model.createContext({contextSize: opts.ctx, batchSize: 512, threads: {ideal: opts.threads, min: opts.threads}, sequences: 1, flashAttention: false});
    let n = 0;
    for await (const _ of context.getSequence().evaluate(promptIds, {temperature: 0, yieldEogToken: true})) if (++n >= 8) break;
    await context.dispose();
}
for (let i = 0; i < opts.warmup; i++) await warm();

const now = () => Number(process.hrtime.bigint()) / 1e9;
const rows = [];
for (let r = 0; r < opts.reps; r++) {
    const context = await model.createContext({contextSize: opts.ctx, batchSize: 512, threads: {ideal: opts.threads, min: opts.threads}, sequences: 1, flashAttention: false, performanceTracking: true});
    const seq = context.getSequence();
    let n = 0, tFirst = 0, eog = 0;
    const gen = [];
    const cpu0 = process.cpuUsage();
    const t0 = now();
    for await (const tok of seq.evaluate(promptIds, {temperature: 0, yieldEogToken: true})) {
        n++;
        if (n === 1) tFirst = now();
        gen.push(tok);
        if (model.isEogToken(tok)) eog++;
        if (n >= opts["max-tokens"]) break;
    }
    const tEnd = now();
    const cpu = process.cpuUsage(cpu0);
    perfLines.length = 0;
    await context.printTimings();
    await new Promise((resolve) => setTimeout(resolve, 50)); // let the log lines arrive
    const perf = (re) => { const m = perfLines.join("\n").match(re); return m ? Number(m[1]) : null; };
    await context.dispose();
    const row = {
        rep: r + 1, prompt_tokens: promptIds.length, prompt_s: tFirst - t0, prompt_tps: promptIds.length / (tFirst - t0),
        generated: n, decode_s: tEnd - tFirst, decode_tps: (n - 1) / (tEnd - tFirst), eog_seen: eog,
        // CPU seconds of the whole process over the wall time: about `threads` when nothing else
        // competes for the cores, less when the machine is busy.
        cpu_per_wall: (cpu.user + cpu.system) / 1e6 / (tEnd - t0),
        // llama.cpp's timers: prompt eval covers the prompt batch, eval the single-token decodes.
        llama_prompt_tps: perf(/prompt eval time =.*?([\d.]+) tokens per second/),
        llama_decode_tps: perf(/\beval time =.*?runs.*?([\d.]+) tokens per second/),
        generated_ids: gen,
        text: model.detokenize(gen, false, promptIds),
    };
    rows.push(row);
    if (opts.json) console.log(JSON.stringify(row));
    else console.log(`rep ${row.rep}: prompt ${row.prompt_tokens} tok in ${(row.prompt_s * 1e3).toFixed(1)} ms (${row.prompt_tps.toFixed(1)} tok/s); decode ${row.generated} tok, ${row.decode_tps.toFixed(2)} tok/s (llama.cpp timers: prompt ${row.llama_prompt_tps} tok/s, decode ${row.llama_decode_tps} tok/s); cpu/wall ${row.cpu_per_wall.toFixed(2)}`);
}
if (!opts.json) {
    const stat = (xs) => {
        const m = xs.reduce((a, b) => a + b, 0) / xs.length;
        const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0;
        return `${m.toFixed(2)} ± ${sd.toFixed(2)}`;
    };
    console.log(`prompt tok/s: ${stat(rows.map((r) => r.prompt_tps))}`);
    console.log(`decode tok/s: ${stat(rows.map((r) => r.decode_tps))}`);
    console.log(`llama.cpp timers: prompt tok/s ${stat(rows.map((r) => r.llama_prompt_tps))}, decode tok/s ${stat(rows.map((r) => r.llama_decode_tps))}`);
}
await model.dispose();
await llama.dispose();
