// Generates the golden token ids that tests/data/bpe_test.cpp compares ftrun's byte-level BPE
// against, and the vocabulary files it needs, from two independent implementations on npm:
//   tiktoken (OpenAI's Rust tiktoken compiled to WASM; ships cl100k_base) and
//   llama3-tokenizer-js (a pure-JS BPE; ships the Llama-3 vocabulary and merges).
// It installs nothing itself. Once, in this directory:
//   npm install --no-save tiktoken@1.0.22 llama3-tokenizer-js@1.2.0
//   node make_golden.mjs
// Outputs (all committed; node_modules is not):
//   corpus.json                 the samples exactly as fed to the references: each line of
//                               corpus.txt with its escapes resolved, then the whole document
//   cl100k_base.golden.json     tiktoken cl100k_base, encode_ordinary (no special tokens)
//   cl100k_qwen2.golden.json    tiktoken with cl100k ranks but Qwen2's pre-tokenizer regex
//   llama3.golden.json          llama3-tokenizer-js, no BOS/EOS, special-token text kept as text
//   cl100k_base.tiktoken.gz     cl100k ranks in tiktoken file form (`<base64> <rank>` lines)
//   llama3.tokenizer.json.gz    Llama-3 in HF tokenizer.json form (vocab + merges, ignore_merges)
//
// corpus.txt holds one sample per line. So that samples can contain newlines, CRs and invisible
// characters, these escapes are resolved: \n \r \t \f \\ and \u{HEX}; any other backslash stays.
// Lines starting with "#!" are comments.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const { get_encoding, Tiktoken } = require("tiktoken");
const cl100k = require("tiktoken/encoders/cl100k_base.json");
const llama3js = (await import("llama3-tokenizer-js")).default;
// Neither package exports its package.json; read the installed copies directly.
const pkgVersion = (name) =>
  JSON.parse(fs.readFileSync(path.join(here, "node_modules", name, "package.json"), "utf8")).version;
const versions = { tiktoken: pkgVersion("tiktoken"), "llama3-tokenizer-js": pkgVersion("llama3-tokenizer-js") };

// formats.md 4.2. cl100k_base's own pat_str is the Llama-3/GLM-4 one, checked below.
const LLAMA3_PAT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_PAT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
if (cl100k.pat_str !== LLAMA3_PAT) throw new Error("cl100k_base pat_str is not the Llama-3 pattern");

// ---- corpus ----------------------------------------------------------------------------------
function unescape(line) {
  return line.replace(/\\(u\{([0-9A-Fa-f]+)\}|[nrtf\\])/g, (m, e, hex) => {
    if (hex) return String.fromCodePoint(parseInt(hex, 16));
    return { n: "\n", r: "\r", t: "\t", f: "\f", "\\": "\\" }[e];
  });
}
const raw = fs.readFileSync(path.join(here, "corpus.txt"), "utf8");
const rawLines = raw.split("\n").filter((l) => !l.startsWith("#!"));
if (rawLines[rawLines.length - 1] === "") rawLines.pop();
const samples = rawLines.map((l, i) => ({ name: `sample ${i}`, text: unescape(l) }));
samples.push({ name: "document", text: samples.map((s) => s.text).join("\n") + "\n" });

// ---- byte-level (GPT-2 bytes_to_unicode) mapping, for the Llama-3 vocabulary -------------------
// Printable Latin-1 bytes map to themselves; the other 68 bytes to U+0100.. in byte order.
const byteToChar = new Array(256);
{
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    byteToChar[b] = String.fromCodePoint(printable ? b : next++);
  }
}
const charToByte = new Map(byteToChar.map((c, b) => [c, b]));
const tokenBytes = (s) => Buffer.from([...s].map((c) => {
  if (!charToByte.has(c)) throw new Error(`vocabulary char U+${c.codePointAt(0).toString(16)} is not byte-level`);
  return charToByte.get(c);
}));

// ---- vocabulary files ------------------------------------------------------------------------
// The npm package stores cl100k compactly: "! <first rank> <b64> <b64> ..." with consecutive
// ranks; plain "<b64> <rank>" lines are accepted too.
function parseRanks(bpeRanks) {
  const out = [];
  for (const line of bpeRanks.split("\n")) {
    if (!line) continue;
    const f = line.split(" ");
    if (f[0] === "!") {
      let r = Number(f[1]);
      for (const tok of f.slice(2)) out.push([tok, r++]);
    } else {
      out.push([f[0], Number(f[1])]);
    }
  }
  return out;
}
const cl100kRanks = parseRanks(cl100k.bpe_ranks);
const tiktokenText = (ranks) => ranks.map(([b64, r]) => `${b64} ${r}\n`).join("");
function writeGz(name, text) {
  // mtime 0 and a fixed level keep the committed bytes stable across regenerations.
  const gz = zlib.gzipSync(Buffer.from(text, "utf8"), { level: 9 });
  gz.writeUInt32LE(0, 4);
  fs.writeFileSync(path.join(here, name), gz);
  console.log(`${name}: ${text.length} bytes, ${gz.length} gzipped`);
}
writeGz("cl100k_base.tiktoken.gz", tiktokenText(cl100kRanks));

const LLAMA3_RANKS = 128000;
const llamaVocab = llama3js.vocabById;  // 128000 byte-level strings, then the 256 specials
const llamaSpecials = llamaVocab.slice(LLAMA3_RANKS);
if (llamaSpecials.length !== 256 || llamaSpecials[0] !== "<|begin_of_text|>")
  throw new Error("unexpected llama3-tokenizer-js vocabulary layout");
const llamaRanks = llamaVocab.slice(0, LLAMA3_RANKS).map((s, i) => [tokenBytes(s).toString("base64"), i]);

// Merge order = insertion order of the package's merge map (it was built from tokenizer.json).
const llamaMerges = [...llama3js.merges.keys()];
{
  const vocab = {};
  llamaVocab.slice(0, LLAMA3_RANKS).forEach((s, i) => { vocab[s] = i; });
  const tj = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: llamaSpecials.map((content, i) => ({
      id: LLAMA3_RANKS + i, content, single_word: false, lstrip: false, rstrip: false,
      normalized: false, special: true,
    })),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: LLAMA3_PAT }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: true,
      vocab, merges: llamaMerges,
    },
  };
  writeGz("llama3.tokenizer.json.gz", JSON.stringify(tj));
}

// ---- golden ids ------------------------------------------------------------------------------
const encCl100k = get_encoding("cl100k_base");
const encQwen2 = new Tiktoken(cl100k.bpe_ranks, cl100k.special_tokens, QWEN2_PAT);
// A second, independent Llama-3 reference: tiktoken's Rust BPE over the same ranks (this is
// what Meta's own tokenizer.py runs).
const encLlamaTk = new Tiktoken(tiktokenText(llamaRanks), {}, LLAMA3_PAT);
const NEVER = /(?!)/g;  // llama3-tokenizer-js splits out special-token text unless told not to

// JavaScript's \s differs from Unicode White_Space (Rust regex, Oniguruma, and ftrun) on U+0085
// (not space in JS) and U+FEFF (space in JS), and its rewritten contraction group lacks (?i)'s
// Unicode folding ('ſ matches 's in Rust). On samples holding those, llama3-tokenizer-js is
// wrong for Llama-3, so the golden takes the tiktoken result there (recorded per sample).
const jsRegexDiffers = (t) => /[\u0085\ufeff]|'\u017f/u.test(t);

function golden(name, reference, vocabFile, pattern, encodeFn) {
  const out = samples.map((s, i) => ({ sample: i, ...encodeFn(s) }));
  const total = out.reduce((n, s) => n + s.ids.length, 0);
  const body = [
    "{",
    `  "encoding": ${JSON.stringify(name)},`,
    `  "reference": ${JSON.stringify(reference)},`,
    `  "packages": ${JSON.stringify(versions)},`,
    `  "vocabulary": ${JSON.stringify(vocabFile)},`,
    `  "pattern": ${JSON.stringify(pattern)},`,
    `  "tokens": ${total},`,
    `  "samples": [`,
    out.map((s) => "    " + JSON.stringify(s)).join(",\n"),
    "  ]",
    "}",
    "",
  ].join("\n");
  fs.writeFileSync(path.join(here, `${name}.golden.json`), body);
  console.log(`${name}.golden.json: ${out.length} samples, ${total} tokens`);
}

const tk = (enc) => (s) => ({ ids: Array.from(enc.encode_ordinary(s.text)) });
golden("cl100k_base", `tiktoken@${versions.tiktoken} get_encoding("cl100k_base").encode_ordinary`,
  "cl100k_base.tiktoken.gz", LLAMA3_PAT, tk(encCl100k));
golden("cl100k_qwen2", `tiktoken@${versions.tiktoken} Tiktoken(cl100k ranks, Qwen2 pat_str).encode_ordinary`,
  "cl100k_base.tiktoken.gz", QWEN2_PAT, tk(encQwen2));

let disagreements = 0;
golden("llama3", `llama3-tokenizer-js@${versions["llama3-tokenizer-js"]} encode(text, {bos: false, eos: false})`,
  "llama3.tokenizer.json.gz", LLAMA3_PAT, (s) => {
    const js = llama3js.encode(s.text, { bos: false, eos: false, specialTokenRegex: NEVER });
    const rust = Array.from(encLlamaTk.encode_ordinary(s.text));
    const same = js.length === rust.length && js.every((v, i) => v === rust[i]);
    if (same) return { ids: js };
    if (jsRegexDiffers(s.text)) return { ids: rust, note: "tiktoken: JS regex \\s / (?i) differ here" };
    disagreements++;
    console.error(`llama3-tokenizer-js and tiktoken disagree on ${s.name}: ${JSON.stringify(s.text).slice(0, 80)}`);
    return { ids: js, note: "references disagree" };
  });

fs.writeFileSync(path.join(here, "corpus.json"),
  "[\n" + samples.map((s) => "  " + JSON.stringify(s)).join(",\n") + "\n]\n");
console.log(`corpus.json: ${samples.length} samples`);
encCl100k.free();
encQwen2.free();
encLlamaTk.free();
if (disagreements) {
  console.error(`${disagreements} samples where the two Llama-3 references disagree`);
  process.exit(1);
}
