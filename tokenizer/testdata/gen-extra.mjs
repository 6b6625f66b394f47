// gen-extra.mjs writes llama-cpp-extra.json: reference token ids for the LLaMA 2 vocabulary,
// produced by llama.cpp's own SPM tokenizer (through node-llama-cpp's prebuilt binaries), an
// implementation independent of package tokenizer. It runs outside the Go module:
//
//	mkdir -p /tmp/nlc && cd /tmp/nlc && npm init -y && npm install node-llama-cpp@3.22.1
//	cd /tmp/nlc && node /path/to/llamacu/tokenizer/testdata/gen-extra.mjs \
//	    /path/to/shared/testdata/llama2-tokenizer/ggml-vocab-llama-spm.gguf \
//	    > /path/to/llamacu/tokenizer/testdata/llama-cpp-extra.json
//
// node-llama-cpp is resolved from the current directory, so run it where it is installed.
// Ids are WITHOUT BOS and with special-token parsing off (model.tokenize(text, false)),
// like llama.cpp's test-tokenizer-0.
import {readFileSync} from "node:fs";
import path from "node:path";
import {pathToFileURL} from "node:url";

const gguf = process.argv[2];
if (!gguf) {
  console.error("usage: node gen-extra.mjs ggml-vocab-llama-spm.gguf > llama-cpp-extra.json");
  process.exit(2);
}
const pkgDir = path.join(process.cwd(), "node_modules", "node-llama-cpp");
const pkg = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8"));
const {getLlama} = await import(pathToFileURL(path.join(pkgDir, "dist", "index.js")).href);

const inputs = [
  // Korean
  "안녕하세요, 세계!",
  "대한민국의 수도는 서울입니다.",
  "저는 학생입니다. 오늘 날씨가 정말 좋네요!",
  "한국어 토크나이저 테스트: 가나다라마바사아자차카타파하",
  "서울특별시 종로구 세종대로 209, 정부서울청사 본관 1층에서 만나요.",
  // Japanese, Chinese
  "こんにちは、世界！",
  "東京は日本の首都です。カタカナとひらがなと漢字。",
  "我爱北京天安门，天安门上太阳升。",
  // Hindi, Arabic, Hebrew, Thai, Russian, Greek
  "नमस्ते दुनिया",
  "भारत एक विशाल देश है।",
  "مرحبا بالعالم",
  "اللغة العربية جميلة جدا",
  "שלום עולם",
  "สวัสดีชาวโลก",
  "Привет, мир! Как дела?",
  "Καλημέρα κόσμε",
  // emoji
  "🦙🦙🦙",
  "I ❤️ Go 🐹 and Rust 🦀",
  "👨‍👩‍👧‍👦 family 🇰🇷🇯🇵 flags",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕿𝖊𝖝𝖙 Ꙋ",
  // whitespace
  "  two leading spaces",
  "trailing tabs\t\t",
  "a\u00a0b\u2003c\u3000全角",
  "line1\r\nline2\n\n\tindented\n",
  "    ",
  "x      y",
  // long words
  "Pneumonoultramicroscopicsilicovolcanoconiosis",
  "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
  "supercalifragilisticexpialidocioussupercalifragilisticexpialidocious",
  // code
  "func main() {\n\tfmt.Println(\"hello, 世界\")\n}\n",
  "for (int i = 0; i < n; ++i) { sum += a[i]; }",
  "def f(x):\n    return x**2  # 제곱",
  "SELECT * FROM users WHERE name = '홍길동';",
  // mixed and odd
  "Hello 안녕 こんにちは 你好 مرحبا Привет",
  "3.14159265358979 1,000,000 ₩10,000 ½",
  "Ǆǅǆ ﬁ ﬀ Å Å é é",
  "\u0000\u0001 control \u007f\u0085",
  "ZWJ\u200dtest\u200bzero",
  "<s> and </s> are text here, so is <unk> and <0x41>",
  "▁literal▁meta▁symbols",
];

const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath: gguf, vocabOnly: true});
const cases = inputs.map((input) => ({
  input,
  expected_ids_no_bos: Array.from(model.tokenize(input, false)),
}));
const release = llama.llamaCppRelease ?? {};
const out = {
  source: `llama.cpp SPM tokenizer via node-llama-cpp ${pkg.version} (prebuilt binaries, llama.cpp ${release.repo ?? "?"} ${release.release ?? "?"}) on ${path.basename(gguf)}`,
  command: "cd /tmp/nlc && npm install node-llama-cpp@" + pkg.version + " && node <repo>/tokenizer/testdata/gen-extra.mjs <shared>/testdata/llama2-tokenizer/ggml-vocab-llama-spm.gguf > <repo>/tokenizer/testdata/llama-cpp-extra.json",
  node: process.version,
  note: "ids are WITHOUT BOS; model.tokenize(text, false): no special-token parsing",
  cases,
};
process.stdout.write(JSON.stringify(out, null, 1) + "\n");
await model.dispose();
await llama.dispose();
