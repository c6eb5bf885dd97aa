// Encoding throughput of the npm tokenizers that tests/data/golden was made with, on the same
// corpus and workloads as bench/tokenizer_bench.cpp (ftrun), so bench/RESULTS.md can set the two
// side by side. Uses the packages installed for the golden generator:
//   cd tests/data/golden && npm install --no-save tiktoken@1.0.22 llama3-tokenizer-js@1.2.0
//   node bench/tokenizer_bench.mjs [--repeat N]
// Rows: tiktoken (Rust compiled to WASM) with cl100k_base, with cl100k ranks + Qwen2's regex, and
// with the Llama-3 ranks; llama3-tokenizer-js (pure JS). "cold" = the corpus document once on a
// fresh encoder; "document xN" = the document repeated N times in one call; "samples xN" = each
// sample as its own call, N rounds. Warm numbers are the best of 3 runs.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const golden = path.join(here, "..", "tests", "data", "golden");
const require = createRequire(path.join(golden, "make_golden.mjs"));
const { get_encoding, Tiktoken } = require("tiktoken");
const cl100k = require("tiktoken/encoders/cl100k_base.json");
const llama3js = (await import(require.resolve("llama3-tokenizer-js"))).default;

let repeat = 20;
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === "--repeat") repeat = Math.max(1, Number(process.argv[++i]));
  else throw new Error("usage: node tokenizer_bench.mjs [--repeat N]");
}

const QWEN2_PAT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const samples = JSON.parse(fs.readFileSync(path.join(golden, "corpus.json"), "utf8")).map((s) => s.text);
const documentText = samples[samples.length - 1];  // the whole document (every line joined)
const lines = samples.slice(0, -1);
const big = documentText.repeat(repeat);
const utf8 = (s) => Buffer.byteLength(s, "utf8");
const lineBytes = lines.reduce((n, s) => n + utf8(s), 0);

// Llama-3 ranks for tiktoken, from the vocabulary llama3-tokenizer-js ships (byte-level strings).
function llamaRanks() {
  const byteOf = new Map();
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    byteOf.set(String.fromCodePoint(printable ? b : next++), b);
  }
  return llama3js.vocabById.slice(0, 128000)
    .map((s, i) => `${Buffer.from([...s].map((c) => byteOf.get(c))).toString("base64")} ${i}\n`).join("");
}

const now = () => Number(process.hrtime.bigint()) / 1e9;
const NEVER = /(?!)/g;
const encoders = [
  { name: "cl100k_base", impl: "tiktoken", make: () => get_encoding("cl100k_base") },
  { name: "cl100k+qwen2 re", impl: "tiktoken", make: () => new Tiktoken(cl100k.bpe_ranks, cl100k.special_tokens, QWEN2_PAT) },
  { name: "llama3", impl: "tiktoken", make: (() => { const r = llamaRanks(); return () => new Tiktoken(r, {}, cl100k.pat_str); })() },
  { name: "llama3", impl: "llama3-tokenizer-js", make: () => llama3js },
];

console.log(`corpus: ${lines.length} samples, ${lineBytes} bytes; document ${utf8(documentText)} bytes; repeat ${repeat}`);
const rows = [];
for (const e of encoders) {
  let t0 = now();
  const enc = e.make();
  const loadMs = (now() - t0) * 1e3;
  const encode = e.impl === "tiktoken"
    ? (s) => enc.encode_ordinary(s).length
    : (s) => enc.encode(s, { bos: false, eos: false, specialTokenRegex: NEVER }).length;
  t0 = now();
  let tokens = encode(documentText);
  rows.push([e.name, e.impl, loadMs, "cold", tokens, utf8(documentText), now() - t0]);
  let best = Infinity;
  for (let trial = 0; trial < 3; trial++) {
    t0 = now();
    tokens = encode(big);
    best = Math.min(best, now() - t0);
  }
  rows.push([e.name, e.impl, loadMs, `document x${repeat}`, tokens, utf8(big), best]);
  best = Infinity;
  for (let trial = 0; trial < 3; trial++) {
    tokens = 0;
    t0 = now();
    for (let r = 0; r < repeat; r++) for (const s of lines) tokens += encode(s);
    best = Math.min(best, now() - t0);
  }
  rows.push([e.name, e.impl, loadMs, `samples x${repeat}`, tokens, lineBytes * repeat, best]);
  if (enc.free) enc.free();
}
const pad = (s, n) => String(s).padEnd(n);
const lpad = (s, n) => String(s).padStart(n);
console.log(`${pad("tokenizer", 16)} ${pad("implementation", 20)} ${lpad("load_ms", 8)}  ${pad("run", 14)} ${lpad("tokens", 11)} ${lpad("seconds", 10)} ${lpad("Mtok/s", 9)} ${lpad("MB/s", 8)}`);
for (const [name, impl, loadMs, run, tokens, bytes, s] of rows)
  console.log(`${pad(name, 16)} ${pad(impl, 20)} ${lpad(loadMs.toFixed(0), 8)}  ${pad(run, 14)} ${lpad(tokens, 11)} ${lpad(s.toFixed(4), 10)} ${lpad((tokens / s / 1e6).toFixed(3), 9)} ${lpad((bytes / s / 1e6).toFixed(2), 8)}`);
