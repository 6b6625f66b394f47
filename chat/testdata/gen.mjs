// gen.mjs writes llama2-chat-ids.json: Llama 2 chat prompts tokenized by llama.cpp (through the
// npm package node-llama-cpp), an implementation independent of ours, for chat's tests.
//
// The prompt strings are built exactly as Meta's llama/generation.py (Llama.chat_completion)
// builds them: a leading system message is folded into the first user message as
// B_SYS + system + E_SYS + user; each (user, assistant) pair is
// tokenizer.encode(f"{B_INST} {user.strip()} {E_INST} {answer.strip()} ", bos=True, eos=True);
// the final user message is tokenizer.encode(f"{B_INST} {user.strip()} {E_INST}", bos=True,
// eos=False). Each segment is tokenized on its own (so each gets SentencePiece's dummy prefix),
// with special-token parsing off (text such as "<s>" stays text), and BOS/EOS are added as ids.
//
// Run (outside the repository; nothing is installed into it):
//
//	mkdir -p /tmp/chatref && cd /tmp/chatref && npm init -y && npm install node-llama-cpp
//	cd /tmp/chatref && node /path/to/chat/testdata/gen.mjs \
//	    /path/to/shared/testdata/llama2-tokenizer/ggml-vocab-llama-spm.gguf \
//	    /path/to/chat/testdata/llama2-chat-ids.json
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [vocabPath, outPath] = process.argv.slice(2);
if (!vocabPath || !outPath) {
  console.error("usage: node gen.mjs VOCAB.gguf OUT.json (run from a folder with node-llama-cpp installed)");
  process.exit(2);
}
// node-llama-cpp is looked up in the working directory, not beside this script.
const pkgDir = path.join(process.cwd(), "node_modules", "node-llama-cpp");
const pkg = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8"));
const { getLlama } = await import(pathToFileURL(path.join(pkgDir, pkg.exports?.["."]?.import ?? "dist/index.js")).href);
const pkgVersion = pkg.version;

const B_INST = "[INST]", E_INST = "[/INST]";
const B_SYS = "<<SYS>>\n", E_SYS = "\n<</SYS>>\n\n";

// Python's str.strip(): the characters for which str.isspace() is true.
const PY_SPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);
function pyStrip(s) {
  const cps = Array.from(s);
  let i = 0, j = cps.length;
  while (i < j && PY_SPACE.has(cps[i].codePointAt(0))) i++;
  while (j > i && PY_SPACE.has(cps[j - 1].codePointAt(0))) j--;
  return cps.slice(i, j).join("");
}

// segments returns Meta's prompt strings for a dialog, each with whether EOS follows it.
function segments(dialog) {
  if (dialog[0].role === "system") {
    dialog = [{ role: dialog[1].role, content: B_SYS + dialog[0].content + E_SYS + dialog[1].content }, ...dialog.slice(2)];
  }
  dialog.forEach((m, i) => {
    if (m.role !== (i % 2 === 0 ? "user" : "assistant")) throw new Error("bad role order");
  });
  if (dialog[dialog.length - 1].role !== "user") throw new Error("last message must be from user");
  const segs = [];
  for (let i = 0; i + 1 < dialog.length; i += 2) {
    segs.push({ text: `${B_INST} ${pyStrip(dialog[i].content)} ${E_INST} ${pyStrip(dialog[i + 1].content)} `, eos: true });
  }
  segs.push({ text: `${B_INST} ${pyStrip(dialog[dialog.length - 1].content)} ${E_INST}`, eos: false });
  return segs;
}

const SYSTEM = "Always answer with Haiku";
const U1 = "I am going to Paris, what should I see?";
const A1 = `Paris, the capital of France, is known for its stunning architecture, art museums, historical landmarks, and romantic atmosphere. Here are some of the top attractions to see in Paris:

1. The Eiffel Tower: The iconic Eiffel Tower is one of the most recognizable landmarks in the world and offers breathtaking views of the city.
2. The Louvre Museum: The Louvre is one of the world's largest and most famous museums, housing an impressive collection of art and artifacts, including the Mona Lisa.
3. Notre-Dame Cathedral: This beautiful cathedral is one of the most famous landmarks in Paris and is known for its Gothic architecture and stunning stained glass windows.

These are just a few of the many attractions that Paris has to offer.`;
const U2 = "What is so great about #1?";
const A2 = "  It is tall, made of iron, and lit up every night.\n";
const U3 = "\tAnd how tall is it?  ";

const cases = [
  { name: "1 turn", messages: [{ role: "user", content: U1 }] },
  { name: "1 turn, system", messages: [{ role: "system", content: SYSTEM }, { role: "user", content: U1 }] },
  { name: "2 turns", messages: [{ role: "user", content: U1 }, { role: "assistant", content: A1 }, { role: "user", content: U2 }] },
  { name: "2 turns, system", messages: [{ role: "system", content: SYSTEM }, { role: "user", content: U1 }, { role: "assistant", content: A1 }, { role: "user", content: U2 }] },
  { name: "3 turns", messages: [{ role: "user", content: U1 }, { role: "assistant", content: A1 }, { role: "user", content: U2 }, { role: "assistant", content: A2 }, { role: "user", content: U3 }] },
  { name: "3 turns, system", messages: [{ role: "system", content: "  You are a terse guide.\nNever use more than 20 words.  " }, { role: "user", content: U1 }, { role: "assistant", content: A1 }, { role: "user", content: U2 }, { role: "assistant", content: A2 }, { role: "user", content: U3 }] },
  { name: "unicode and byte fallback", messages: [{ role: "system", content: "Réponds en français 🇫🇷" }, { role: "user", content: "Grüß dich 👋 — 你好, ¿qué tal?" }, { role: "assistant", content: "Très bien, merci ! 😊" }, { role: "user", content: "Und jetzt auf Russisch: как дела?" }] },
  { name: "literal <s> and </s> are text", messages: [{ role: "user", content: "What does <s>old</s> mean in HTML?" }, { role: "assistant", content: "<s> is strikethrough; </s> closes it." }, { role: "user", content: "Thanks </s><s>" }] },
  { name: "empty answer and whitespace-only user", messages: [{ role: "user", content: "Say nothing." }, { role: "assistant", content: "" }, { role: "user", content: " \n " }] },
  { name: "user padding kept inside folded system", messages: [{ role: "system", content: "\n sys \n" }, { role: "user", content: "  hi  " }] },
];

const llama = await getLlama({ gpu: false });
const model = await llama.loadModel({ modelPath: vocabPath, vocabOnly: true });
const bos = model.tokens.bos, eos = model.tokens.eos;
if (bos == null || eos == null) throw new Error("vocabulary lacks BOS or EOS");

const out = {
  description:
    "Llama 2 chat prompts as Meta's llama/generation.py chat_completion builds them, tokenized by llama.cpp. " +
    "ids: the full prompt (BOS and EOS included as ids); segments: each string Meta passes to tokenizer.encode, " +
    "with the ids llama.cpp gives it (no BOS/EOS).",
  generator: "chat/testdata/gen.mjs",
  tokenizer: {
    implementation: `llama.cpp release tag ${llama.llamaCppRelease.release} (${llama.llamaCppRelease.repo}) via npm node-llama-cpp ${pkgVersion}, ${llama.buildType} binary; common_tokenize(add_special=false, parse_special=false)`,
    vocab: path.basename(vocabPath),
    vocab_sha256: createHash("sha256").update(readFileSync(vocabPath)).digest("hex"),
    bos, eos,
  },
  reference: "meta-llama/llama llama/generation.py, Llama.chat_completion (B_INST, E_INST, B_SYS, E_SYS)",
  cases: [],
};
for (const c of cases) {
  const segs = segments(c.messages).map((s) => ({ text: s.text, eos: s.eos, ids: Array.from(model.tokenize(s.text, false)) }));
  const ids = segs.flatMap((s) => [bos, ...s.ids, ...(s.eos ? [eos] : [])]);
  out.cases.push({ name: c.name, messages: c.messages, segments: segs, ids });
}
// Indented JSON with each id list on one line.
const text = JSON.stringify(out, null, 1).replace(/\[\s*(\d+(?:,\s*\d+)*)\s*\]/g, (_, nums) => `[${nums.split(/,\s*/).join(", ")}]`);
writeFileSync(outPath, text + "\n");
await model.dispose();
await llama.dispose();
console.error(`wrote ${out.cases.length} cases to ${outPath}`);
