#!/usr/bin/python3
"""Writes the committed seed corpora fuzz/corpus/<target>/ (small valid and near-valid inputs).

  fuzz/make_corpus.py            http, safetensors, gguf, tokenizer and config seeds (this script)
  ZF_FUZZ_SEED_OUT=fuzz/corpus/checkpoint build-fuzz/fuzz/fuzz_checkpoint -runs=0
                                 the checkpoint seeds: manifests of tiny checkpoints written for
                                 real by the target's start-up (fuzz/fuzz_checkpoint.cpp)

Seeds are inputs to start from, not tests: a fuzzer run copies them and never writes here.
"""
import json, os, struct

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- http: whole requests as a client sends them ------------------------------------------
def post(path, body, headers=(), version="1.1"):
    b = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = f"POST {path} HTTP/{version}\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    head += "".join(h + "\r\n" for h in headers)
    return head.encode() + f"Content-Length: {len(b)}\r\n\r\n".encode() + b


put("http", "completions", post("/v1/completions", {
    "model": "zeroflow-fuzz", "prompt": "Call me Ishmael.", "max_tokens": 3, "temperature": 0,
    "stop": ["\n", "."], "logprobs": 2, "n": 2, "seed": 1}))
put("http", "completions_ids", post("/v1/completions", {
    "prompt": [1, 2, 3, 299], "max_tokens": 2, "ignore_eos": True, "best_of": 1, "top_k": -1,
    "stream": True}))
put("http", "chat_stream", post("/v1/chat/completions", {
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                 {"role": "assistant", "content": "Hello."},
                 {"role": "developer", "content": "\u00e9t\u00e9"}],
    "stream": True, "stream_options": {"include_usage": True}, "logprobs": True,
    "top_logprobs": 2, "max_completion_tokens": 4, "presence_penalty": 0.5,
    "frequency_penalty": -0.5, "repetition_penalty": 1.1, "logit_bias": {"65": 5, "066": -100},
    "top_p": 0.9}, ["Authorization: Bearer sk-fuzz"]))
chunked_body = b'{"prompt": "a b c", "max_tokens": 1}'
put("http", "chunked",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
    b"%x\r\n" % 10 + chunked_body[:10] + b"\r\n" + b"%x\r\n" % (len(chunked_body) - 10) +
    chunked_body[10:] + b"\r\n0\r\n\r\n")
put("http", "weights", post("/v1/update_weights_from_disk",
                            {"path": "/models/step-000100", "version": 7}))
put("http", "weights_model_path", post("/v1/update_weights_from_disk",
                                       {"model_path": "runs/a", "version": None}))
put("http", "pipelined_gets",
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /v1/models?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-fuzz\r\n\r\n"
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    b"DELETE /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
# near-valid
put("http", "huge_number", post("/v1/completions", b'{"prompt": "x", "temperature": 1e999}'))
put("http", "http10_stream", post("/v1/chat/completions", {
    "messages": [{"role": "user", "content": "hi"}], "stream": True}, version="1.0"))
put("http", "expect_continue", post("/v1/completions", {"prompt": "x", "echo": True},
                                    ["Expect: 100-continue"]))
put("http", "bad_json", post("/v1/completions", b'{"prompt": "x", "max_tokens": }'))
put("http", "batch_prompt", post("/v1/completions", {"prompt": ["a", "b"], "max_tokens": 99999}))
put("http", "bad_length",
    b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{}")

# ---- safetensors: small whole files -------------------------------------------------------
def safetensors(tensors, metadata=None, pad=True, fix_offsets=True):
    """tensors: [(name, dtype, shape, bytes)] -> file bytes (offsets in order)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)
tiny = [("wte.weight", "F32", [4, 2], f32(*range(8))),
        ("h.0.attn.c_attn.bias", "BF16", [6], b"\x80\x3f" * 6),
        ("h.0.ln_1.weight", "F16", [2, 1], b"\x00\x3c\x00\xc0"),
        ("positions", "I64", [3], struct.pack("<3q", 0, 1, 2**40)),
        ("mask", "BOOL", [2], b"\x01\x00"),
        ("ids", "U32", [2], struct.pack("<2I", 7, 2**31 + 1)),
        ("empty", "U8", [0], b"")]
put("safetensors", "tiny", safetensors(tiny, {"format": "pt"}))
put("safetensors", "unpadded", safetensors(tiny[:2], pad=False))
with open(os.path.join(root, "tests", "golden", "st_python_fixture.safetensors"), "rb") as f:
    put("safetensors", "python_fixture", f.read())
# near-valid: overlapping spans, a length field past the end, an unknown dtype, duplicate keys
good = safetensors(tiny[:2])
h = json.loads(good[8:8 + struct.unpack("<Q", good[:8])[0]])
h["h.0.attn.c_attn.bias"]["data_offsets"] = [16, 28]
hb = json.dumps(h).encode()
put("safetensors", "overlap", struct.pack("<Q", len(hb)) + hb + good[8 + len(hb):])
put("safetensors", "long_header", struct.pack("<Q", 1 << 40) + good[8:])
put("safetensors", "bad_dtype", safetensors([("x", "F8", [1], b"\x00")]))
dup = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, ' \
      b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
put("safetensors", "duplicate", struct.pack("<Q", len(dup)) + dup + b"\x00")
put("safetensors", "shape_overflow", safetensors([("x", "F64", [2**62, 4], b"")]))

# ---- gguf: small whole files (storage/gguf.hpp) -------------------------------------------
def gguf_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gguf_val(t, v):
    """A value of GGUF type t (0-12) without its type; arrays: v = (elem_type, [items])."""
    fixed = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q",
             12: "d"}
    if t == 8:
        return gguf_str(v)
    if t == 9:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gguf_val(et, x) for x in items)
    return struct.pack("<" + fixed[t], v)


def gguf(kvs, tensors, align=32, version=3, pad_last=True):
    """kvs: [(key, type, value)]; tensors: [(name, dims, ggml_type, bytes[, offset])] -> file
    bytes (each tensor at the next aligned offset, as storage/gguf.cpp's writer lays them out,
    unless an offset is given)."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        head += gguf_str(k) + struct.pack("<I", t) + gguf_val(t, v)
    data, infos = b"", b""
    for name, dims, gtype, raw, *off in tensors:
        infos += gguf_str(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, gtype,
                                              off[0] if off else len(data))
        data += raw + b"\0" * (-len(raw) % align)
    out = head + infos
    if tensors:
        out += b"\0" * (-len(out) % align) + data
    if not pad_last and tensors:
        out = out[:len(out) - (-len(tensors[-1][3]) % align)]
    return out


gguf_tiny_kvs = [
    ("general.architecture", 8, "llama"), ("general.name", 8, "h\u00e9llo \U0001F600"),
    ("llama.block_count", 4, 1), ("llama.context_length", 10, 128),
    ("llama.rope.freq_base", 6, 10000.0), ("llama.attention.layer_norm_rms_epsilon", 12, 1e-5),
    ("t.u8", 0, 255), ("t.i8", 1, -1), ("t.u16", 2, 65535), ("t.i16", 3, -2), ("t.i32", 5, -3),
    ("t.bool", 7, 1), ("t.i64", 11, -(2**40)),
    ("tokenizer.ggml.tokens", 9, (8, ["<s>", "</s>", "a", "\u0120b"])),
    ("tokenizer.ggml.scores", 9, (6, [0.0, -1.5, -2.0, -3.25])),
    ("tokenizer.ggml.token_type", 9, (5, [3, 3, 1, 1])),
    ("t.bools", 9, (7, [1, 0])),
    ("t.nested", 9, (9, [(4, [1, 2]), (8, ["x"]), (9, [(12, [0.5])]), (0, [])])),
]
gguf_tensors = [
    ("token_embd.weight", [4, 2], 0, f32(*range(8))),                     # F32
    ("blk.0.attn_norm.weight", [4], 1, b"\x00\x3c" * 4),                 # F16
    ("blk.0.attn_q.weight", [32, 2], 8, (b"\x00\x3c" + bytes(range(32))) * 2),  # Q8_0
    ("blk.0.ffn_up.weight", [32], 2, b"\x00\x3c" + bytes(range(16))),    # Q4_0
    ("blk.0.ffn_down.weight", [256], 12, bytes(144)),                     # Q4_K
    ("output_norm.weight", [2], 30, b"\x80\x3f" * 2),                    # BF16
    ("empty", [0, 3], 0, b""),
]
put("gguf", "tiny", gguf(gguf_tiny_kvs, gguf_tensors))
put("gguf", "align64_v2", gguf([("general.alignment", 4, 64)] + gguf_tiny_kvs[:3],
                               gguf_tensors[:4], align=64, version=2))
put("gguf", "align1_unpadded", gguf([("general.alignment", 4, 1)], gguf_tensors[:2], align=1,
                                    pad_last=False))
put("gguf", "metadata_only", gguf(gguf_tiny_kvs, []))
put("gguf", "empty", gguf([], []))
# near-valid: overlapping tensors, a misaligned offset, an unknown type, a bad row size, a
# count past the end, a big-endian version, a truncated tensor
put("gguf", "overlap", gguf([], [gguf_tensors[0], gguf_tensors[1][:4] + (0,)]))
put("gguf", "misaligned", gguf([], [("w", [4], 0, f32(1, 2, 3, 4), 4)]))
put("gguf", "bad_type", gguf([], [("w", [4], 4, bytes(16))]))
put("gguf", "bad_row", gguf([], [("w", [33], 8, bytes(34 * 2))]))
put("gguf", "huge_count", b"GGUF" + struct.pack("<IQQ", 3, 0, 2**62) + bytes(16))
put("gguf", "big_endian", b"GGUF" + struct.pack(">IQQ", 3, 0, 0))
put("gguf", "truncated", gguf(gguf_tiny_kvs[:2], gguf_tensors[:3])[:-40])

# ---- tokenizer: tokenizer.json (+ "\0tokenizer_config.json\0" + tokenizer_config.json) ------
hf = os.path.join(root, "tests", "golden", "hf")
for model in ("tiny-gpt2", "tiny-llama"):
    with open(os.path.join(hf, model, "tokenizer.json"), "rb") as f:
        put("tokenizer", model, f.read())
sep = b"\0tokenizer_config.json\0"
with open(os.path.join(hf, "tiny-llama", "tokenizer.json"), "rb") as f:
    llama = f.read()
put("tokenizer", "tiny-llama-config", llama + sep + json.dumps({
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<|begin_of_text|>",
    "eos_token": {"content": "<|end_of_text|>"}}).encode())


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


b2u = bytes_to_unicode()
vocab = {b2u[b]: b for b in range(256)}
merges = []
for a, b in (("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("\u0120", "w")):
    vocab[a + b] = len(vocab)
    merges.append(f"{a} {b}")
minimal = {
    "version": "1.0", "added_tokens": [
        {"id": len(vocab), "content": "<s>", "special": True},
        {"id": len(vocab) + 1, "content": "</s>", "special": True}],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}},
                                  {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [len(vocab)]},
                                          "</s>": {"id": "</s>", "ids": [len(vocab) + 1]}}},
    "model": {"type": "BPE", "dropout": None, "ignore_merges": True, "vocab": vocab,
              "merges": merges}}
put("tokenizer", "minimal_template", json.dumps(minimal))
minimal_split = dict(minimal, pre_tokenizer={"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
    post_processor={"type": "Sequence", "processors": [
        {"type": "ByteLevel"}, {"type": "RobertaProcessing", "sep": ["</s>", len(vocab) + 1],
                                "cls": ["<s>", len(vocab)]}]})
minimal_split["model"] = dict(minimal["model"],
                              merges=[m.split(" ") for m in merges], ignore_merges=False)
put("tokenizer", "minimal_split", json.dumps(minimal_split))
# near-valid: an id far past the vocabulary, a missing byte token
far = json.loads(json.dumps(minimal))
far["added_tokens"][1]["id"] = 10**6
put("tokenizer", "far_id", json.dumps(far))
holed = json.loads(json.dumps(minimal))
del holed["model"]["vocab"][b2u[0x41]]
put("tokenizer", "missing_byte", json.dumps(holed))

# ---- config: TOML as `--config FILE` reads it ---------------------------------------------
put("config", "full", """\
[model]
arch = "llama"
n_layer = 2
n_head = 4
n_embd = 64
n_positions = 128
vocab_size = 512
n_kv_head = 2
head_dim = 0
intermediate = 0
norm_eps = 1e-5
rope_theta = 500000.0
tied_head = false
attn_bias = false
init_hf = ""

[model.rope_scaling]
type = "llama3"
factor = 8.0
low_freq_factor = 1.0
high_freq_factor = 4.0
original_max_positions = 64

[train]
steps = 10
batch_size = 2
seq_len = 64
grad_accum = 1
seed = 1337
prefetch = 2
threads = 0
ranks = 1
sample_tokens = 0

[optimizer]
lr = 0.002
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
eps = 1e-8
grad_clip = 1.0

[schedule]
warmup = 4
min_lr_ratio = 0.1

[zero]
stage = 2

[checkpoint]
every = 5
keep = 3

[eval]
every = 0
batches = 8

[data]
corpus = "moby-dick"
tokenizer = "gpt2"
data_dir = ""
val_fraction = 0.05

[engine]
policy = "split_fuse"
token_budget = 256
max_seqs = 64
block_size = 16
kv_blocks = 0
max_queue = 256
threads = 0
prefix_caching = true
batch_invariant = false

[server]
host = "127.0.0.1"
port = 8000
io_threads = 2
enable_weight_updates = false
api_keys = ["sk-one", "sk-two"]
api_key_file = ""
protect_metrics = false
""")
put("config", "renamed_keys", """\
# keys under their old paths, dotted keys and inline tables
train.lr = 3e-4
train.zero.stage = 1
train.checkpoint_every = 50
model = { n_layer = 1, n_embd = 32, n_head = 2 }
server.api_keys = ['literal', "esc\\u00e9\\n"]
""")
put("config", "tiny", 'model.n_embd = 16\nmodel.n_head = 2\ntrain.steps = 1\n')
put("config", "bad_type", '[train]\nsteps = "ten"\n')
put("config", "bad_range", '[optimizer]\nlr = inf\n[model]\nn_head = 0\n')
put("config", "unknown_key", '[train]\nsteps = 1\nspeed = 9\n')
put("config", "bad_syntax", '[model\nn_layer = = 2\n')


# ---- console: run.json NUL metrics.jsonl NUL spans.jsonl NUL Last-Event-ID -----------------
def console(run, metrics, spans, last_id=""):
    return "\0".join([run, metrics, spans, last_id])


run = json.dumps({"kind": "train", "state": "running", "pid": 1, "host": "h", "start_unix": 1e9,
                  "end_unix": None, "total_steps": 10, "message": "", "config": "[train]\n"})
metrics = "".join(json.dumps({"step": i, "loss": 5 - i * 0.1, "lr": 1e-3, "elapsed_s": i * 0.5,
                              "reward": {"mean": 0.5}, "ok": True}) + "\n" for i in range(1, 6))
spans = '{"start_unix": 1000000000}\n' + "".join(
    json.dumps({"actor": a, "what": "step", "t0": i, "t1": i + 0.5}) + "\n"
    for i in range(4) for a in ("rank0", "sampler"))
put("console", "train", console(run, metrics, spans))
put("console", "resume", console(run, metrics, spans, "0.3"))
put("console", "serve", console(json.dumps({"kind": "serve", "state": "finished"}),
                                 '{"t": 0.5, "queue_depth": 3, "ttft_p50_ms": 12.5}\n'
                                 '{"t": 1.5, "queue_depth": 1e999}\ngarbage\n{"t": 2',
                                 '{"actor": "engine"}\n', "x.y"))
