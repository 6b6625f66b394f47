// peer.mjs: what every script here needs of the peer — node-llama-cpp loaded from PEER_DIR
// (default /tmp/peer), the versions to record, and the output helpers.
import {createRequire} from "node:module";
import {createHash} from "node:crypto";
import {readFileSync, createReadStream} from "node:fs";
import path from "node:path";
import {execFileSync} from "node:child_process";

const peerDir = process.env.PEER_DIR ?? "/tmp/peer";
const require = createRequire(path.join(peerDir, "package.json"));

// nlc is the node-llama-cpp module (getLlama, LlamaLogLevel, readGgufFileInfo, ...).
export const nlc = await import(require.resolve("node-llama-cpp"));
const nlcDir = path.join(peerDir, "node_modules", "node-llama-cpp");
export const nlcVersion = JSON.parse(readFileSync(path.join(nlcDir, "package.json"), "utf8")).version;
export const llamaInfo = JSON.parse(readFileSync(path.join(nlcDir, "llama", "llama.cpp.info.json"), "utf8"));

// The llama.cpp sources node-llama-cpp bundles are a git bundle with one squashed commit.
export let llamaCommit = "unknown";
try {
    llamaCommit = execFileSync("git", ["bundle", "list-heads", path.join(nlcDir, "llama", "gitRelease.bundle")], {encoding: "utf8"}).split(/\s/)[0];
} catch { /* git missing: leave unknown */ }

// llamaCpp describes the llama.cpp build, as the reference files record it.
export const llamaCpp = `${llamaInfo.llamaCppGithubRepo} ${llamaInfo.tag} (release tag as node-llama-cpp records it; bundled source commit ${llamaCommit})`;

// toJSON is JSON with arrays of numbers kept on one line.
const num = String.raw`-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?`;
export function toJSON(v) {
    const re = new RegExp(String.raw`\[\s*(${num}(?:,\s*${num})*)\s*\]`, "g");
    return JSON.stringify(v, null, 2).replace(re, (_, body) => "[" + body.split(/,\s*/).join(", ") + "]");
}

// sha256 is a file's SHA-256, hex.
export function sha256(file) {
    return new Promise((resolve, reject) => {
        const h = createHash("sha256");
        createReadStream(file).on("data", (d) => h.update(d)).on("end", () => resolve(h.digest("hex"))).on("error", reject);
    });
}
