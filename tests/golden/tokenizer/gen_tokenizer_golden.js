// Generates the golden GPT-2 token ids that tests/runtime/test_tokenizer.cpp checks zf::tokenizer
// against. The reference is OpenAI's tiktoken (Rust, via the npm WASM build tiktoken@1.0.22),
// encoding "gpt2" with every special token allowed, so "<|endoftext|>" becomes 50256.
//
// Run once, from the repository root, after scripts/setup has fetched data/moby-dick.txt:
//
//   npm pack tiktoken@1.0.22 && tar xzf tiktoken-1.0.22.tgz      # unpacks to ./package
//   TIKTOKEN=$PWD/package node tests/golden/tokenizer/gen_tokenizer_golden.js [data-dir]
//
// (TIKTOKEN defaults to the module name "tiktoken", i.e. a normal node_modules install;
// data-dir defaults to ./data.) It writes, next to this script:
//   edge_cases.json       [{"name", "text", "ids"}]: short strings covering the pre-tokenizer
//   moby_dick.ids.u16le   every id of data/moby-dick.txt, uint16 little-endian
//   moby_dick.json        {"count", "text_bytes", "text_sha256"} for that file
// The outputs are committed; the test needs neither node nor tiktoken.
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const { get_encoding } = require(process.env.TIKTOKEN || "tiktoken");

const outDir = __dirname;
const dataDir = process.argv[2] || path.join(process.cwd(), "data");
const enc = get_encoding("gpt2");
const encode = (text) => Array.from(enc.encode(text, "all"));

const edge = [
  ["empty", ""],
  ["hello", "Hello world"],
  ["single_space", " "],
  ["spaces_only", "     "],
  ["trailing_spaces", "hello   "],
  ["inner_space_runs", "a  b   c    d"],
  ["leading_spaces", "   indented"],
  ["newline_only", "\n"],
  ["three_newlines", "\n\n\n"],
  ["newlines_in_text", "line one\n\nline two\n"],
  ["trailing_newlines_spaces", "end.  \n  \n"],
  ["crlf", "a\r\nb\r\n"],
  ["tabs", "\tx\t\ty\t"],
  ["mixed_whitespace", " \t \n x \t\n"],
  ["contractions", "it's don't we're they've I'm you'll he'd"],
  ["contractions_upper", "IT'S DON'T WE'RE THEY'VE I'M YOU'LL HE'D John'S"],
  ["contractions_alone", "'s't're've'm'll'd"],
  ["apostrophe_other", "rock'n'roll 'quoted' ''"],
  ["digits", "12345 678"],
  ["digit_letter_mix", "abc123def 4.5e10 1,000,000"],
  ["punctuation", "Hello, world!!! ...?? (a) [b] {c} <d> @#$%^&*"],
  ["curly_quotes", "\u201cSo,\u201d he said, \u2018it\u2019s fine.\u2019"],
  ["em_dash", "ago\u2014never mind"],
  ["accented", "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u00fcber"],
  ["cjk", "\u4f60\u597d\uff0c\u4e16\u754c\u3002 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8"],
  ["emoji", "hi \u{1F600}\u{1F44D}\u{1F3FD} \u{1F468}\u200D\u{1F469}\u200D\u{1F467} ok"],
  ["nbsp", "a\u00a0b \u00a0 c"],
  ["eot_alone", "<|endoftext|>"],
  ["eot_inside", "Hello<|endoftext|>world"],
  ["eot_spaced", "end of doc. <|endoftext|> Start again\n"],
  ["eot_twice", "<|endoftext|><|endoftext|>"],
  ["eot_partial", "<|endoftext| <|endof"],
];
const cases = edge.map(([name, text]) => ({ name, text, ids: encode(text) }));
fs.writeFileSync(
  path.join(outDir, "edge_cases.json"),
  "[\n" + cases.map((c) => JSON.stringify(c)).join(",\n") + "\n]\n",
);

const buf = fs.readFileSync(path.join(dataDir, "moby-dick.txt"));
const ids = encode(buf.toString("utf8"));
const out = Buffer.alloc(ids.length * 2);
ids.forEach((id, i) => {
  if (id > 0xffff) throw new Error(`id ${id} does not fit uint16`);
  out.writeUInt16LE(id, 2 * i);
});
fs.writeFileSync(path.join(outDir, "moby_dick.ids.u16le"), out);
const meta = {
  count: ids.length,
  text_bytes: buf.length,
  text_sha256: crypto.createHash("sha256").update(buf).digest("hex"),
};
fs.writeFileSync(path.join(outDir, "moby_dick.json"), JSON.stringify(meta, null, 1) + "\n");
enc.free();
console.log(`wrote ${cases.length} edge cases and ${ids.length} Moby-Dick ids to ${outDir}`);
