// greedy-refs.mjs: greedy reference continuations from llama.cpp (CPU build shipped
// by the npm package node-llama-cpp), used as an independent peer for llamacu.
//
// Setup (outside the repo):
//   mkdir -p /tmp/peer && cd /tmp/peer && npm init -y && npm install node-llama-cpp
// Run from the repository root:
//   [PEER_DIR=/tmp/peer] node bench/peer/greedy-refs.mjs \
//     [model.gguf] [out.json] [nTokens]
// Defaults: ../shared/testdata/stories260K/stories260K.gguf,
//           engine/testdata/llama-cpp-greedy-stories260K.json, 60.
//
// Sampling is pure argmax: temperature 0 makes node-llama-cpp build a sampler chain of
// just llama_sampler_init_greedy (no repeat penalty, no top-k/top-p/min-p).
// Generation stops early only at an end-of-generation token or BOS.
import {readFileSync, writeFileSync, existsSync} from "node:fs";
import path from "node:path";
import {nlc, nlcVersion, llamaCpp, toJSON, sha256} from "./peer.mjs";

const {getLlama, LlamaLogLevel} = nlc;

const modelPath = process.argv[2] ?? "../shared/testdata/stories260K/stories260K.gguf";
const outPath = process.argv[3] ?? "engine/testdata/llama-cpp-greedy-stories260K.json";
const nTokens = Number(process.argv[4] ?? 60);

const prompts = [
    "Once upon a time",
    "",
    "Lily and Ben",
    "The cat sat",
    "One day, a little boy named Tim",
    "Sue had a red ball.",
    "Once upon a time, there was a big dog",
    "Max was sad because",
];


const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.warn});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const bos = model.tokens.bos;
const eos = model.tokens.eos;
const addBos = model.tokens.shouldPrependBosToken;

const cases = [];
for (const prompt of prompts) {
    // A fresh context per prompt so nothing carries over between cases.
    const context = await model.createContext({contextSize: 256, batchSize: 256, threads: 1, sequences: 1});
    const seq = context.getSequence();
    const textIds = model.tokenize(prompt, false);
    const promptIds = addBos && bos != null ? [bos, ...textIds] : [...textIds];
    const generated = [];
    let stop = "length";
    for await (const tok of seq.evaluate(promptIds, {temperature: 0, yieldEogToken: true})) {
        generated.push(tok);
        if (model.isEogToken(tok) || tok === eos) { stop = "eos"; break; }
        if (tok === bos) { stop = "bos"; break; }
        if (generated.length >= nTokens) break;
    }
    await context.dispose();
    const bodyIds = promptIds.filter((t, i) => !(i === 0 && t === bos));
    cases.push({
        prompt,
        prompt_ids: promptIds,
        generated_ids: generated,
        stop,
        // Continuation only, detokenized with the prompt as left context.
        text: model.detokenize(generated, false, promptIds),
        // Prompt plus continuation, as llama2.c's run.c prints it (everything after BOS).
        full_text: model.detokenize([...bodyIds, ...generated], false),
    });
    console.error(`${JSON.stringify(prompt)}: ${promptIds.length} prompt ids, ${generated.length} generated (${stop})`);
}

// Cross-check against llama2.c's run.c references when they sit beside the model
// (stories260K): they print everything after BOS, the prompt included.
const refChecks = [
    ["Once upon a time", "expected_once_upon_a_time_n64.txt", "equal"],
    ["", "expected_greedy_n200.txt", "prefix"],
];
const agreement = [];
for (const [prompt, file, mode] of refChecks) {
    const refPath = path.join(path.dirname(modelPath), file);
    const c = cases.find((x) => x.prompt === prompt);
    if (!existsSync(refPath) || c == null) continue;
    const ref = readFileSync(refPath, "utf8");
    const ok = mode === "equal" ? ref === c.full_text : ref.startsWith(c.full_text);
    agreement.push({prompt, reference: file, mode, agrees: ok});
    console.error(`llama2.c ${file} (${mode}): ${ok ? "AGREES" : "DIFFERS"}`);
    if (!ok) process.exitCode = 1;
}

const tokenization = prompts.map((p) => ({
    text: p,
    ids_without_bos: model.tokenize(p, false),
    ids_with_bos: addBos && bos != null ? [bos, ...model.tokenize(p, false)] : model.tokenize(p, false),
}));

const out = {
    source: {
        tool: "llama.cpp via node-llama-cpp (prebuilt CPU binaries, gpu: false)",
        node_llama_cpp: nlcVersion,
        llama_cpp: llamaCpp,
        node: process.version,
        command: `node bench/peer/greedy-refs.mjs ${process.argv.slice(2).join(" ")}`.trim(),
        sampler: "temperature 0 => llama_sampler_init_greedy only (argmax); no repeat penalty, no top-k/top-p/min-p; stop at EOG or BOS",
        n_tokens: nTokens,
    },
    model: {path: path.basename(modelPath), sha256: await sha256(modelPath), bos, eos, add_bos: addBos},
    llama2c_agreement: agreement,
    cases,
    tokenization,
};
writeFileSync(outPath, toJSON(out) + "\n");
console.error(`wrote ${outPath}`);
await model.dispose();
await llama.dispose();
