// embed-refs.mjs: reference embeddings from llama.cpp (CPU build shipped by the npm
// package node-llama-cpp), used as an independent peer for llamacu's embedding feature.
//
// Setup (outside the repo):
//   mkdir -p /tmp/peer && cd /tmp/peer && npm init -y && npm install node-llama-cpp
// Run from the repository root:
//   [PEER_DIR=/tmp/peer] node bench/peer/embed-refs.mjs [out.json] [model.gguf ...]
// Defaults: engine/testdata/llama-cpp-embeddings.json,
//           ../shared/testdata/stories260K/stories260K.gguf
//           ../shared/testdata/tiny-random/llama-2-tiny-random.gguf.
//
// What llama.cpp returns (node-llama-cpp 3.22.1, read from its installed sources):
//  - LlamaEmbeddingContext makes a context with `embeddings: true` and no pooling override, so
//    llama.cpp takes the pooling type from the GGUF (`<arch>.pooling_type`); neither model has
//    that key, so it is LLAMA_POOLING_TYPE_NONE. AddonContext::GetEmbedding then skips
//    llama_get_embeddings_seq and returns llama_get_embeddings_ith(ctx, -1): the row of t_embd
//    for the last token, which for the llama graph is `result_norm` (the hidden state after the
//    final RMSNorm, before the output projection), copied float32 -> Float64Array.
//  - Nothing normalizes it: LlamaEmbedding only freezes a copy of the vector
//    (calculateCosineSimilarity normalizes on the fly, the stored vector is raw).
//  - LlamaEmbeddingContext._prepareInput prepends resolveBeginningTokenToPrepend (BOS for SPM
//    with add_bos) unless the input already starts with it, and appends
//    resolveEndTokenToAppend, which for SPM is EOS only when tokens.shouldAppendEosToken
//    (llama_vocab_get_add_eos; tokenizer.ggml.add_eos_token). Both models lack that key, so
//    nothing is appended. The script still passes explicit [BOS, ...text ids] arrays, records
//    the tokens actually handed to the sequence (by wrapping the context's internal
//    `_sequence.evaluate`) and exits 1 if they are not exactly the intended ids.
//
// Per case:
//   ids   BOS + model.tokenize(text, false): exactly the ids llama.cpp evaluated
//   last  embedding of ids (final-RMSNorm-ed hidden state of the last token, unnormalized)
//   mean  element-wise mean (float64) over i = 1..n of the embedding of the prefix ids[0:i];
//         the model is causal, so that is the mean of the per-position hidden states, BOS included
// Checks (exit 1, nothing written, on failure): evaluated ids equal the intended ids for every
// call; the text given as a string evaluates the same ids and gives the same vector; a second
// evaluation of the full ids equals the last prefix's embedding bit for bit; vector lengths are
// n_embd, all values finite, ids start with BOS = 1.
import {readFileSync, writeFileSync} from "node:fs";
import path from "node:path";
import {nlc, nlcVersion, llamaCpp, toJSON, sha256} from "./peer.mjs";

const {getLlama, LlamaLogLevel} = nlc;

const outPath = process.argv[2] ?? "engine/testdata/llama-cpp-embeddings.json";
const modelPaths = process.argv.length > 3 ? process.argv.slice(3) : [
    "../shared/testdata/stories260K/stories260K.gguf",
    "../shared/testdata/tiny-random/llama-2-tiny-random.gguf",
];

const texts = [
    "Once upon a time",
    "The cat sat on the mat.",
    "Lily and Ben went to the park to play.",
    "안녕하세요, 세계!",
    "Hello",
    "One day, a little girl named Lily found a shiny red ball in the garden behind her house, " +
        "and she ran to show it to her mother, who smiled and said they could play with it " +
        "together after lunch under the big tree.",
];


const failures = [];
function check(ok, what) {
    if (!ok) {
        failures.push(what);
        console.error(`FAIL: ${what}`);
    }
}
const sameArray = (a, b) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.warn});
const models = [];
for (const modelPath of modelPaths) {
    const model = await llama.loadModel({modelPath, gpuLayers: 0});
    const bos = model.tokens.bos;
    const nEmbd = model.embeddingVectorSize;
    const embCtx = await model.createEmbeddingContext({contextSize: 512, batchSize: 512, threads: 1});

    // Record the exact tokens each getEmbeddingFor hands to llama.cpp (after _prepareInput).
    let evaluated = null;
    const seq = embCtx._sequence;
    const origEvaluate = seq.evaluate.bind(seq);
    seq.evaluate = (tokens, options) => {
        evaluated = tokens.slice();
        return origEvaluate(tokens, options);
    };
    async function embed(input) {
        evaluated = null;
        const e = await embCtx.getEmbeddingFor(input);
        return {vector: Array.from(e.vector), evaluated};
    }

    const cases = [];
    for (const text of texts) {
        const ids = [bos, ...model.tokenize(text, false)];
        check(ids[0] === 1, `${path.basename(modelPath)} ${JSON.stringify(text)}: BOS is ${ids[0]}, not 1`);
        check(ids.length < 512, `${path.basename(modelPath)} ${JSON.stringify(text)}: ${ids.length} ids do not fit`);

        const sum = new Float64Array(nEmbd);
        let lastPrefix = null;
        for (let i = 1; i <= ids.length; i++) {
            const prefix = ids.slice(0, i);
            const r = await embed(prefix);
            check(r.evaluated != null && sameArray(r.evaluated, prefix), `${JSON.stringify(text)} prefix ${i}: evaluated ${JSON.stringify(r.evaluated)}`);
            check(r.vector.length === nEmbd, `${JSON.stringify(text)} prefix ${i}: vector length ${r.vector.length} != n_embd ${nEmbd}`);
            for (let k = 0; k < nEmbd; k++) sum[k] += r.vector[k];
            lastPrefix = r.vector;
        }
        const mean = Array.from(sum, (s) => s / ids.length);

        // Full ids again: deterministic, so bit-identical to the last prefix.
        const full = await embed(ids);
        check(sameArray(full.evaluated, ids), `${JSON.stringify(text)} full: evaluated ${JSON.stringify(full.evaluated)}`);
        check(sameArray(full.vector, lastPrefix), `${JSON.stringify(text)}: full-ids embedding differs from last prefix's`);
        // The plain string goes through _prepareInput's own BOS/EOS handling: same ids, same vector.
        const fromText = await embed(text);
        check(sameArray(fromText.evaluated, ids), `${JSON.stringify(text)} as string: evaluated ${JSON.stringify(fromText.evaluated)} != ${JSON.stringify(ids)}`);
        check(sameArray(fromText.vector, full.vector), `${JSON.stringify(text)} as string: embedding differs`);

        const last = full.vector;
        check([...last, ...mean].every(Number.isFinite), `${JSON.stringify(text)}: non-finite values`);
        const norm = Math.hypot(...last);
        console.error(`${path.basename(modelPath)} ${JSON.stringify(text)}: ${ids.length} ids, |last| = ${norm.toFixed(4)}, |mean| = ${Math.hypot(...mean).toFixed(4)}`);
        cases.push({text, ids, last, mean});
    }
    models.push({
        file: path.basename(modelPath),
        sha256: await sha256(modelPath),
        n_embd: nEmbd,
        pooling: "none (last token)",
        bos,
        add_bos: model.tokens.shouldPrependBosToken,
        add_eos: model.tokens.shouldAppendEosToken,
        cases,
    });
    await embCtx.dispose();
    await model.dispose();
}
await llama.dispose();

if (failures.length > 0) {
    console.error(`${failures.length} check(s) failed; not writing ${outPath}`);
    process.exit(1);
}

const out = {
    generator: "bench/peer/embed-refs.mjs: llama.cpp via node-llama-cpp (prebuilt CPU binaries, gpu: false), LlamaEmbeddingContext.getEmbeddingFor",
    node_llama_cpp: nlcVersion,
    llama_cpp: llamaCpp,
    node: process.version,
    command: `node bench/peer/embed-refs.mjs ${process.argv.slice(2).join(" ")}`.trim(),
    definitions: {
        ids: "BOS + tokenize(text) without special tokens; exactly the ids llama.cpp evaluated (no end token appended)",
        last: "llama_get_embeddings_ith(ctx, -1) with pooling NONE: final-RMSNorm-ed hidden state of the last token, unnormalized, float32 values",
        mean: "float64 element-wise mean over i = 1..n of the last-token embedding of the prefix ids[0:i] (per-position hidden states, BOS included)",
    },
    models,
};
writeFileSync(outPath, toJSON(out) + "\n");
console.error(`wrote ${outPath}`);
