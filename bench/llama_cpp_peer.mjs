// The llama.cpp side of bench/decode: node-llama-cpp (llama.cpp's prebuilt CPU binaries) on a
// GGUF file, threads as given: prefill of a prompt of promptLen token ids (a fixed pseudo-random
// draw), then nGen greedy decode steps, timed from the first generated token on; median over 3
// runs after a warm-up. Prints one JSON line {prefill_ms, decode_ms_per_token}.
//   node llama_cpp_peer.mjs FILE PROMPT_LEN N_GEN THREADS
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
const [modelPath, promptLen, nGen, threads] = process.argv.slice(2).map((x, i) => i ? Number(x) : x);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const ctx = await model.createContext({contextSize: 1024, threads, batchSize: 512});
let seed = 1;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) % 50000;
const prompt = Array.from({length: promptLen}, rand);
const pre = [], dec = [];
for (let r = 0; r < 4; ++r) {
  const seq = ctx.getSequence();
  const t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  const t1 = performance.now();
  let n = 0, t2 = 0;
  for await (const tok of seq.evaluate([prompt[promptLen - 1]], {temperature: 0})) {
    if (++n === 1) t2 = performance.now();  // from the first generated token on: decode steps only
    if (n >= nGen + 1) break;
  }
  const t3 = performance.now();
  if (r > 0) { pre.push(t1 - t0); dec.push((t3 - t2) / nGen); }
  seq.dispose();
}
const med = a => a.sort((x, y) => x - y)[a.length >> 1];
console.log(JSON.stringify({prefill_ms: med(pre), decode_ms_per_token: med(dec)}));
