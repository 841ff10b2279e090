// llama.cpp's greedy continuation of a prompt of token ids, through node-llama-cpp (llama.cpp's
// prebuilt CPU binaries), to check that a GGUF file we export means to llama.cpp what it means
// to us (tests/storage/test_gguf_llama.cpp compares our greedy ids with the ids this printed).
// Prints one JSON line {"ids": [...]} with the N generated ids (temperature 0: argmax; no stop
// at end-of-generation tokens, no repeat penalty).
//   node llama_cpp_greedy.mjs FILE '[ID, ID, ...]' N
// node-llama-cpp is imported from $NODE_LLAMA_CPP (a path to its dist/index.js) when set, else
// by name from the node_modules beside this script (NODE_PATH does not reach ESM imports).
const lib = process.env.NODE_LLAMA_CPP ?? "node-llama-cpp";
const {getLlama, LlamaLogLevel} = await import(lib);
const [modelPath, idsJson, nText] = process.argv.slice(2);
if (!modelPath || !idsJson || !nText) {
  console.error("usage: node llama_cpp_greedy.mjs FILE '[ID, ...]' N");
  process.exit(2);
}
const prompt = JSON.parse(idsJson), n = Number(nText);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const ctx = await model.createContext({contextSize: 256, threads: 1, batchSize: 256});
const seq = ctx.getSequence();
const ids = [];
for await (const tok of seq.evaluate(prompt, {temperature: 0})) {
  ids.push(tok);
  if (ids.length >= n) break;
}
console.log(JSON.stringify({ids}));
await ctx.dispose();
await model.dispose();
