// lora-refs.mjs: greedy reference continuations from llama.cpp (CPU build shipped by the
// npm package node-llama-cpp) for a base model with a LoRA adapter applied, used as an
// independent peer for llamacu's LoRA support.
//
// Setup (outside the repo):
//   mkdir -p /tmp/peer && cd /tmp/peer && npm init -y && npm install node-llama-cpp
// Run from the repository root:
//   [PEER_DIR=/tmp/peer] node bench/peer/lora-refs.mjs [out.json] [model.gguf] [adapter.gguf]
// Defaults: engine/testdata/llama-cpp-lora-stories260K.json,
//           ../shared/testdata/stories260K/stories260K.gguf,
//           engine/testdata/stories260K-lora.gguf (written by `go run ./bench/peer/mklora`).
// The prompts, the token count and the base (no adapter) continuations come from
// engine/testdata/llama-cpp-greedy-stories260K.json (greedy-refs.mjs).
//
// Generation is greedy-refs.mjs's loop: a fresh context per prompt, BOS + text ids,
// temperature 0 (node-llama-cpp builds a sampler chain of just llama_sampler_init_greedy:
// argmax, no repeat penalty, no top-k/top-p/min-p), stop early only at an EOG token or BOS.
// It runs through evaluateWithMetadata({probabilities: true}) instead of evaluate: the same
// sampler picks the token; the sorted probabilities only add min_top2_gap. The script first
// reruns the base model (no adapter) through this loop and exits 1, writing nothing, unless
// that reproduces greedy-refs.mjs's generated ids exactly.
//
// How the adapter is applied (node-llama-cpp 3.22.1 and the llama.cpp it bundles, read from
// the installed sources):
//  - createContext({lora: {adapters: [{filePath, scale}]}}) calls LlamaModel._getOrLoadLora,
//    which loads each file once per model (AddonModel LoadLora -> llama_adapter_lora_init
//    (model, path)), then LlamaContext._setLoras -> AddonContext::SetLoras ->
//    llama_set_adapters_lora(ctx, adapters, n, scales) with the float scale (default 1).
//    An adapter at scale 0 is dropped by llama.cpp, so only non-zero scales are run here.
//  - llama_adapter_lora_init requires general.type "adapter", adapter.type "lora" and
//    general.architecture equal to the model's; it reads adapter.lora.alpha (0 if absent)
//    and pairs "<base tensor>.lora_a"/".lora_b"; A has ne = [n_in, r], B ne = [r, n_out].
//  - Nothing is merged into the base weights. Every matmul built by build_lora_mm(W, x)
//    (for llama: attn q/k/v/output and ffn gate/up/down) becomes
//        W·x + s·B·(A·x),   s = scale·alpha/r   (s = scale when alpha is 0),
//    with r = B's ne[0] (llama_adapter_lora_weight::get_scale), computed at run time in F32.
//
// Per run (one per scale) and case:
//   prompt, prompt_ids (BOS + text ids), generated_ids, stop, text (continuation detokenized
//   with the prompt as left context), full_text (as greedy-refs.mjs), differs_from_base
//   (generated_ids != greedy-refs.mjs's), first_diff (first differing index or null),
//   min_top2_gap (smallest ln(p1/p2) = logit gap between the chosen and the runner-up token
//   over the generated steps: how close greedy came to a tie, a hint for tolerance).
import {readFileSync, writeFileSync} from "node:fs";
import path from "node:path";
import {nlc, nlcVersion, llamaCpp, toJSON, sha256} from "./peer.mjs";

const {getLlama, LlamaLogLevel, readGgufFileInfo} = nlc;

const outPath = process.argv[2] ?? "engine/testdata/llama-cpp-lora-stories260K.json";
const modelPath = process.argv[3] ?? "../shared/testdata/stories260K/stories260K.gguf";
const adapterPath = process.argv[4] ?? "engine/testdata/stories260K-lora.gguf";
const baseRefPath = "engine/testdata/llama-cpp-greedy-stories260K.json";
const scales = [1.0, 0.5];

const baseRef = JSON.parse(readFileSync(baseRefPath, "utf8"));
const nTokens = baseRef.source.n_tokens;
const prompts = baseRef.cases.map((c) => c.prompt);


const modelSha = await sha256(modelPath);
if (modelSha !== baseRef.model.sha256) {
    console.error(`model sha256 ${modelSha} differs from ${baseRefPath}'s ${baseRef.model.sha256}`);
    process.exit(1);
}

// Keep llama.cpp's log (info and up): warnings are printed as usual, the adapter loader's
// lines are recorded (llama_adapter_lora_init_impl dumps the adapter's metadata, as read).
const logLines = [];
const warnings = [];
const llama = await getLlama({
    gpu: false, build: "never", logLevel: LlamaLogLevel.info,
    logger: (level, message) => {
        const msg = String(message).replace(/\n+$/, "");
        logLines.push({level, msg});
        if (level === LlamaLogLevel.warn || level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) {
            warnings.push(`${level}: ${msg}`);
            console.error(`[llama.cpp ${level}] ${msg}`);
        }
    },
});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const bos = model.tokens.bos;
const eos = model.tokens.eos;
const addBos = model.tokens.shouldPrependBosToken;

function sameIds(a, b) {
    return a.length === b.length && a.every((t, i) => t === b[i]);
}

async function generate(prompt, lora) {
    // A fresh context per prompt so nothing carries over between cases.
    const context = await model.createContext({contextSize: 256, batchSize: 256, threads: 1, sequences: 1, ...(lora ? {lora} : {})});
    const seq = context.getSequence();
    const textIds = model.tokenize(prompt, false);
    const promptIds = addBos && bos != null ? [bos, ...textIds] : [...textIds];
    const generated = [];
    let stop = "length";
    let minGap = Infinity;
    for await (const out of seq.evaluateWithMetadata(promptIds, {probabilities: true}, {temperature: 0, yieldEogToken: true})) {
        const tok = out.token;
        const top = [...out.probabilities.entries()].slice(0, 2);
        if (top[0][0] !== tok) throw new Error(`greedy pick ${tok} is not the most probable token ${top[0][0]}`);
        if (top.length > 1) minGap = Math.min(minGap, Math.log(top[0][1] / top[1][1]));
        generated.push(tok);
        if (model.isEogToken(tok) || tok === eos) { stop = "eos"; break; }
        if (tok === bos) { stop = "bos"; break; }
        if (generated.length >= nTokens) break;
    }
    await context.dispose();
    const bodyIds = promptIds.filter((t, i) => !(i === 0 && t === bos));
    return {
        prompt,
        prompt_ids: promptIds,
        generated_ids: generated,
        stop,
        // Continuation only, detokenized with the prompt as left context.
        text: model.detokenize(generated, false, promptIds),
        // Prompt plus continuation, as llama2.c's run.c prints it (everything after BOS).
        full_text: model.detokenize([...bodyIds, ...generated], false),
        min_top2_gap: Number(minGap.toFixed(4)),
    };
}

// Base model through the same loop, before any adapter is loaded: must equal greedy-refs.mjs.
let baseAgrees = true;
const baseGaps = [];
for (const [i, prompt] of prompts.entries()) {
    const c = await generate(prompt, null);
    baseGaps.push(c.min_top2_gap);
    const ref = baseRef.cases[i];
    if (!sameIds(c.prompt_ids, ref.prompt_ids) || !sameIds(c.generated_ids, ref.generated_ids)) {
        console.error(`base ${JSON.stringify(prompt)}: DIFFERS from ${baseRefPath}`);
        baseAgrees = false;
    }
}
if (!baseAgrees) process.exit(1);
console.error(`base model: all ${prompts.length} continuations equal ${baseRefPath}`);

const runs = [];
for (const scale of scales) {
    const lora = {adapters: [{filePath: adapterPath, scale}]};
    const cases = [];
    for (const [i, prompt] of prompts.entries()) {
        const c = await generate(prompt, lora);
        const base = baseRef.cases[i].generated_ids;
        const differs = !sameIds(c.generated_ids, base);
        let firstDiff = null;
        if (differs) {
            firstDiff = 0;
            while (firstDiff < c.generated_ids.length && firstDiff < base.length && c.generated_ids[firstDiff] === base[firstDiff]) firstDiff++;
        }
        cases.push({...c, differs_from_base: differs, first_diff: firstDiff});
        console.error(`scale ${scale} ${JSON.stringify(prompt)}: ${c.prompt_ids.length} prompt ids, ${c.generated_ids.length} generated (${c.stop}), ` +
            `${differs ? `differs from base at ${firstDiff}` : "same as base"}, min top2 gap ${c.min_top2_gap}`);
    }
    runs.push({scale, cases});
}

// What llama.cpp read from the adapter (its metadata dump), plus the rank from the tensor
// shapes (llama.cpp takes r = lora_b ne[0] per tensor; node-llama-cpp's GGUF reader here).
await new Promise((r) => setTimeout(r, 50)); // let queued log callbacks arrive
const adapterLog = logLines.filter((l) => /llama_adapter_lora_init/.test(l.msg)).map((l) => l.msg.replace(/\s+/g, " ").trim());
const alphaLine = adapterLog.find((l) => /adapter\.lora\.alpha/.test(l));
const alphaLogged = alphaLine ? Number(alphaLine.match(/=\s*(\S+)\s*$/)[1]) : null;
const loadedLine = adapterLog.find((l) => /loaded \d+ tensors/.test(l));
const nLoaded = loadedLine ? Number(loadedLine.match(/loaded (\d+) tensors/)[1]) : null;
const info = await readGgufFileInfo(adapterPath);
const alphaMeta = info.metadata?.adapter?.lora?.alpha ?? null;
const ranks = [...new Set(info.tensorInfo.filter((t) => t.name.endsWith(".lora_b")).map((t) => Number(t.dimensions[0])))];
const targets = [...new Set(info.tensorInfo.filter((t) => t.name.endsWith(".lora_a")).map((t) => t.name.replace(/^blk\.\d+\./, "").replace(/\.weight\.lora_a$/, "")))].sort();
const nLayers = new Set(info.tensorInfo.map((t) => t.name.match(/^blk\.(\d+)\./)?.[1]).filter((x) => x != null)).size;
const alpha = alphaLogged ?? alphaMeta;
const rank = ranks.length === 1 ? ranks[0] : null;
if (alphaLogged != null && alphaMeta != null && alphaLogged !== alphaMeta) console.error(`alpha: llama.cpp logged ${alphaLogged}, GGUF reader ${alphaMeta}`);
for (const run of runs) {
    const multiplier = alpha ? run.scale * alpha / rank : run.scale;
    run.effective_multiplier = multiplier;
    run.n_differ_from_base = run.cases.filter((c) => c.differs_from_base).length;
    console.error(`scale ${run.scale} (s = ${multiplier}): ${run.n_differ_from_base} of ${run.cases.length} continuations differ from the base model`);
}

const out = {
    generator: "bench/peer/lora-refs.mjs",
    source: {
        tool: "llama.cpp via node-llama-cpp (prebuilt CPU binaries, gpu: false)",
        node_llama_cpp: nlcVersion,
        llama_cpp: llamaCpp,
        node: process.version,
        command: `node bench/peer/lora-refs.mjs ${process.argv.slice(2).join(" ")}`.trim(),
        sampler: "temperature 0 => llama_sampler_init_greedy only (argmax); no repeat penalty, no top-k/top-p/min-p; stop at EOG or BOS",
        lora: "llama_adapter_lora_init + llama_set_adapters_lora(scale); unmerged: y = W·x + s·B·(A·x), s = scale·alpha/rank, for every weight the adapter has",
        n_tokens: nTokens,
        base_reference: baseRefPath,
    },
    model: {path: path.basename(modelPath), sha256: modelSha, bos, eos, add_bos: addBos},
    adapter: {
        path: path.basename(adapterPath),
        sha256: await sha256(adapterPath),
        alpha,
        alpha_source: alphaLogged != null ? "llama.cpp log (llama_adapter_lora_init_impl metadata dump)" : "GGUF metadata (node-llama-cpp reader)",
        rank,
        rank_source: "lora_b ne[0] (what llama.cpp's get_scale uses), read with node-llama-cpp's GGUF reader",
        n_tensors_loaded: nLoaded,
        layers: nLayers,
        targets,
        llama_cpp_log: adapterLog,
        // Every warning llama.cpp printed in this run (model load included), not just the adapter's.
        llama_cpp_warnings: warnings,
    },
    // The base model (no adapter) rerun through the same loop; min_top2_gap per case, same order.
    base_check: {reference: baseRefPath, agrees: baseAgrees, min_top2_gap: baseGaps},
    runs,
};
writeFileSync(outPath, toJSON(out) + "\n");
console.error(`wrote ${outPath}`);
await model.dispose();
await llama.dispose();
