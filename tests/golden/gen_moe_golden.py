#!/usr/bin/python3
"""PyTorch twin of zeroflow's Mixture-of-Experts models (docs/moe.md): writes four golden files
for the MoE parity tests (forward logits in training and eval capacity, CE loss, the auxiliary
balance and z losses, the routing of batch 0, every gradient of the total loss, and 10 AdamW
training steps on the total loss), in zeroflow's canonical layout:
    moe_gpt2_top1.safetensors                GPT-2, top-1 softmax router, capacity drops
    moe_llama_top2_dropless.safetensors      Llama, top-2 softmax router, dropless
    moe_gpt2_prmoe.safetensors               GPT-2 PR-MoE: 2 then 4 experts, dense residual MLP
    moe_llama_sigmoid_interval2.safetensors  Llama, MoE every 2nd layer, top-2 sigmoid router

Run (from anywhere; needs Debian python3-torch 1.13.1 CPU + python3-numpy, nothing else):
    /usr/bin/python3 tests/golden/gen_moe_golden.py            # (re)generate the four files
    /usr/bin/python3 tests/golden/gen_moe_golden.py --check    # re-read them and re-run
Options: --out DIR (the folder of the four files; default: next to this script).
The output is deterministic (one thread, fixed seeds) and committed; tests read it, not torch.

Spec
----
The MoE math is docs/moe.md's, to the letter; this script is its executable form. Everything
that is not MoE is the dense twins' (imported, not copied): GPT-2 blocks as gen_golden.forward
(LayerNorm eps 1e-5, learned positions, Conv1D [in, out] with biases, gelu_tanh, tied head) and
Llama blocks as gen_llama_golden.forward (RMSNorm, llama3 RoPE, GQA, SwiGLU, no biases, untied
lm_head here); fp32 throughout, no dropout.

Config (stored in "__metadata__" as strings, read back by --check; metadata order):
    arch, the model keys of the dense twin (gpt2: n_layer=2 n_head=2 n_embd=32 vocab_size=96
    n_positions=32 as gpt_small.safetensors; llama: gen_llama_golden.MODEL with tied=0, i.e.
    n_layer=2 n_head=4 n_kv_head=2 n_embd=32 head_dim=8 intermediate=48 ... rope_type=llama3 ...),
    then the MoE keys
        moe_num_experts moe_top_k moe_interval moe_layer_experts ("2,4" or "" for none)
        moe_expert_intermediate moe_capacity_factor moe_eval_capacity_factor moe_min_capacity
        moe_dropless moe_router (softmax|sigmoid) moe_norm_topk moe_residual
        moe_aux_loss_coef moe_z_loss_coef
    (model.moe.layers of docs/moe.md is empty in every file: the MoE layers come from interval,
    and the expert-bias (aux-loss-free) selection is off), then gpt_small's training keys
    B=2 T=16 steps=10 lr=0.01 warmup=3 min_lr_ratio=0.1 beta1=0.9 beta2=0.95 eps=1e-08
    weight_decay=0.1 grad_clip=1.0, then seed; plus ln_eps=1e-05 (gpt2 only), format=pt,
    generator, torch_version.
    file                                     arch  E k interval layer_experts Ie  cf  eval_cf seed
    moe_gpt2_top1.safetensors                gpt2  4 1 1        ""            64 1.0  2.0     1277
    moe_llama_top2_dropless.safetensors      llama 4 2 1        ""            32 1.0  2.0     1276
    moe_gpt2_prmoe.safetensors               gpt2  4 2 1        "2,4"         64 1.25 2.0     1280
    moe_llama_sigmoid_interval2.safetensors  llama 4 2 2        ""            32 1.0  2.0     1236
    min_capacity=1, aux_loss_coef=0.1, z_loss_coef=0.01 and norm_topk=1 everywhere; router
    softmax except the sigmoid file; dropless=1 only in the llama top2 file; residual=1 only in
    the prmoe file (its dense MLP: mlp.c_fc [C, 4C], the block's ordinary GPT-2 MLP size). With
    n = B*T = 32 rows: top1 trains with cap = 8 per expert (tokens ARE dropped at step 0, asserted),
    evaluates with cap 16; prmoe trains with cap 32 in layer 0 (E=2) and 20 in layer 1 (E=4); the
    sigmoid file trains with cap 16; eval caps: top1 16, prmoe 32 and 32, sigmoid 32. Seeds: of
    1234..1333, the one with the widest selection margin (below) and, unless dropless, at least
    one drop at step 0.

Model: per block l, attention as the dense twin; then the block's MLP part is the dense MLP
unless l is an MoE layer ((l + 1) % interval == 0; layer_experts gives that layer's expert count
E_l, one entry per MoE layer in layer order, else num_experts). An MoE layer computes exactly
docs/moe.md's router (z = ln2 @ router_w, s = softmax | sigmoid), top-k selection (descending,
ties to the lower expert index: a stable descending sort of s), gates (with norm_topk when k > 1),
capacity cap = min(n, max(min_capacity, ceil(((cf * n) * k) / E))) in double (training mode,
i.e. everything except eval_logits, uses capacity_factor; eval_logits uses
eval_capacity_factor), slots in the priority order j = 0..k-1, i = 0..n-1, with rows i = b*T + t;
y[i] = sum over kept j in j order of g[i, j] * expert_{sel[i, j]}(ln2[i]); x3 = x2 + y
(+ residual_mlp(ln2)). Auxiliary losses per MoE layer over all n rows before any drop:
f[e] = count[e] / (n k) (a constant), P[e] = mean_i s[i, e], L_bal = E sum_e f[e] P[e],
L_z = mean_i logsumexp_e(z[i, :])^2.
    total loss = CE + aux_loss_coef * sum_layers L_bal + z_loss_coef * sum_layers L_z
Autograd differentiates the total loss through the gates (softmax / sigmoid and the top-k
renormalisation), P and z; the selection indices and the capacity drops are not differentiated.

Initial weights (torch.manual_seed(seed), drawn in the file's parameter order, then
input_ids = torch.randint(0, V, (steps, B, T+1)), as gen_golden.init_params): every matrix
(dim >= 2, routers and experts included) ~ N(0, 0.1); norm weights ~ 1 + N(0, 0.1); GPT-2 biases
(Conv1D, experts' and LayerNorm) ~ 0.05 N(0, 1) -- i.e. gen_golden.init_value for gpt2 and
gen_llama_golden.init_value for llama, applied to every name.
Batch s: inputs ids[s, :, :T], targets ids[s, :, 1:].

Training: gen_golden.run_all's procedure (see gen_golden.py's docstring) on the total loss: `steps`
steps from the initial weights, step s on batch s, backward of the total loss, clip_grad_norm_ to
grad_clip, warm-up + cosine lr_at, torch.optim.AdamW (foreach=False) with weight decay on every
parameter with dim >= 2 (routers and experts included) and 0 on the rest. A parameter that
autograd leaves without a gradient (an expert that no kept slot reaches) gets a zero gradient,
as in zeroflow's flat gradient buffer: it counts in the norm (0), and AdamW still decays it and
its moments.

Parameter names and order (= zeroflow's flat buffer): docs/moe.md's canonical order. gpt2:
wte.weight, wpe.weight, blocks h.{l}. (dense blocks as gpt_small; MoE blocks: ln_1.*, attn.*,
ln_2.*, [residual: mlp.c_fc.weight [C,4C], mlp.c_fc.bias, mlp.c_proj.weight [4C,C],
mlp.c_proj.bias], mlp.router.weight [C,E], then per expert e mlp.experts.{e}.c_fc.weight [C,Ie],
.c_fc.bias [Ie], .c_proj.weight [Ie,C], .c_proj.bias [C]), ln_f.weight, ln_f.bias (tied head).
llama: embed_tokens.weight, blocks layers.{l}. (dense as llama_small_untied; MoE:
input_layernorm, self_attn.qkv_proj, self_attn.o_proj, post_attention_layernorm,
[residual: mlp.gate_up_proj [C,2I], mlp.down_proj [I,C]], mlp.router.weight [C,E], per expert
mlp.experts.{e}.gate_up_proj.weight [C,2Ie] ([gate | up] columns), .down_proj.weight [Ie,C]),
norm.weight, lm_head.weight.

File contents (safetensors written by gen_golden.write_safetensors; tensors contiguous in this
order; F32 unless said):
    input_ids           I32 [steps, B, T+1]
    logits              [B, T, V]   batch 0, initial weights, training capacity (capacity_factor)
    eval_logits         [B, T, V]   the same with eval_capacity_factor (== logits when dropless)
    loss                [1]         CE of batch 0 at the initial weights (training capacity)
    aux_loss            [1]         sum over MoE layers of L_bal (unscaled), same forward
    z_loss              [1]         sum over MoE layers of L_z (unscaled), same forward
    <name>              every parameter's initial value
    grad.<name>         d total loss / d <name>, batch 0, initial weights
    final.<name>        every parameter after `steps` training steps
    train_losses        [steps]     CE of step s (train_losses[0] == loss)
    train_aux_losses    [steps]     sum L_bal of step s
    train_z_losses      [steps]     sum L_z of step s
    train_grad_norms    [steps]     total-loss grad norm of step s before clipping
    train_lrs           [steps]     lr_s
    route.counts        [n_moe, maxE]  count[e] of each MoE layer (before drops; 0-padded to the
                                       largest E), batch 0, initial weights, training capacity
    route.dropped       [n_moe]        number of dropped (i, j) slots, same forward
    route.sel           I32 [n_moe, n, k]  sel[i, j], same forward
    (n_moe = number of MoE layers, in layer order; n = B*T.)

Robustness (asserted when generating and checking): the C++ model computes in fp32 with another
summation order, so no selection may sit on a near tie. In every MoE layer of every training
step (step 0 is the forward of logits/grads; eval_logits selects the same experts), for every row
the gaps between consecutive sorted scores s over the first min(k+1, E) of them (the k-th vs the
(k+1)-th decides the set, the others the order, which sets the capacity priority) must exceed
MIN_MARGIN = 1e-4, both in s and in z; the minima are printed.
Self-checks (generate and --check): with no MoE layer the twin is gen_golden.forward /
gen_llama_golden.forward exactly; a single-expert dropless MoE whose expert holds the dense MLP's
tensors equals the dense model; the vectorised MoE layer equals a plain per-row loop written
straight from docs/moe.md (float64); and, in float64, autograd's gradients of CE, sum L_bal and
sum L_z agree with central finite differences on entries of the first and last MoE layers'
routers, expert matrices, a gpt2 expert bias and a norm weight (f is then constant and the
selections do not move).
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_golden  # noqa: E402
import gen_llama_golden  # noqa: E402
from gen_golden import (LN_EPS, batch, config_metadata, conv1d, leaf_params, loss_of,  # noqa: E402
                        lr_at, max_diff, read_safetensors, write_safetensors)
from gen_hf import causal_attention, rms_norm, rotate_half  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATOR = "tests/golden/gen_moe_golden.py"
MIN_MARGIN = 1e-4
TRAIN = dict(gen_llama_golden.TRAIN)  # gpt_small's training hyper-parameters
GPT2 = dict(arch="gpt2", **{k: gen_golden.CONFIG[k]
                            for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")})
LLAMA = dict(gen_llama_golden.MODEL, tied=0)


def moe(num_experts, top_k, expert_intermediate, interval=1, layer_experts="",
        capacity_factor=1.0, eval_capacity_factor=2.0, min_capacity=1, dropless=0,
        router="softmax", norm_topk=1, residual=0, aux_loss_coef=0.1, z_loss_coef=0.01):
    return dict(moe_num_experts=num_experts, moe_top_k=top_k, moe_interval=interval,
                moe_layer_experts=layer_experts, moe_expert_intermediate=expert_intermediate,
                moe_capacity_factor=capacity_factor,
                moe_eval_capacity_factor=eval_capacity_factor, moe_min_capacity=min_capacity,
                moe_dropless=dropless, moe_router=router, moe_norm_topk=norm_topk,
                moe_residual=residual, moe_aux_loss_coef=aux_loss_coef,
                moe_z_loss_coef=z_loss_coef)


CONFIGS = {  # file name -> config (metadata order)
    "moe_gpt2_top1.safetensors":
        dict(GPT2, **moe(4, 1, 64, capacity_factor=1.0, eval_capacity_factor=2.0),
             **TRAIN, seed=1277),
    "moe_llama_top2_dropless.safetensors":
        dict(LLAMA, **moe(4, 2, 32, dropless=1), **TRAIN, seed=1276),
    "moe_gpt2_prmoe.safetensors":
        dict(GPT2, **moe(4, 2, 64, layer_experts="2,4", capacity_factor=1.25,
                         eval_capacity_factor=2.0, residual=1), **TRAIN, seed=1280),
    "moe_llama_sigmoid_interval2.safetensors":
        dict(LLAMA, **moe(4, 2, 32, interval=2, router="sigmoid", capacity_factor=1.0),
             **TRAIN, seed=1236),
}


# ---------------------------------------------------------------------------------------------
# Config helpers


def moe_layers(cfg):
    """MoE layer ids in layer order (model.moe.layers is empty here: interval decides)."""
    if cfg["moe_num_experts"] <= 0:
        return []
    return [l for l in range(cfg["n_layer"]) if (l + 1) % cfg["moe_interval"] == 0]


def experts_per_layer(cfg):
    """{MoE layer id: its expert count E_l}."""
    layers = moe_layers(cfg)
    le = [int(x) for x in cfg["moe_layer_experts"].split(",")] if cfg["moe_layer_experts"] else []
    assert not le or len(le) == len(layers), "layer_experts needs one entry per MoE layer"
    out = {l: (le[i] if le else cfg["moe_num_experts"]) for i, l in enumerate(layers)}
    assert all(E >= cfg["moe_top_k"] for E in out.values()), out
    return out


def capacity(cfg, n, E, cf):
    """docs/moe.md's per-expert capacity (None when dropless), computed in double."""
    if cfg["moe_dropless"]:
        return None
    k = cfg["moe_top_k"]
    return min(n, max(cfg["moe_min_capacity"], math.ceil(((cf * n) * k) / E)))


def is_gpt2(cfg):
    assert cfg["arch"] in ("gpt2", "llama"), cfg["arch"]
    return cfg["arch"] == "gpt2"


# ---------------------------------------------------------------------------------------------
# Parameters


def param_specs(cfg):
    """[(name, shape)] in docs/moe.md's canonical order."""
    C = cfg["n_embd"]
    experts = experts_per_layer(cfg)
    Ie = cfg["moe_expert_intermediate"]
    if is_gpt2(cfg):
        dense = gen_golden.param_specs(cfg)  # dense blocks and the rest exactly as gpt_small
        specs = dense[:2]
        for l in range(cfg["n_layer"]):
            h = f"h.{l}."
            block = [s for s in dense if s[0].startswith(h)]
            if l not in experts:
                specs += block
                continue
            specs += block[:8]  # ln_1, attn, ln_2
            if cfg["moe_residual"]:
                specs += block[8:]  # the block's dense MLP, 4C wide
            E = experts[l]
            specs.append((h + "mlp.router.weight", (C, E)))
            for e in range(E):
                x = f"{h}mlp.experts.{e}."
                specs += [(x + "c_fc.weight", (C, Ie)), (x + "c_fc.bias", (Ie,)),
                          (x + "c_proj.weight", (Ie, C)), (x + "c_proj.bias", (C,))]
        specs += dense[-2:]
        assert [n for n, _ in dense[-2:]] == ["ln_f.weight", "ln_f.bias"]
        return specs
    dense = gen_llama_golden.param_specs(cfg)
    specs = dense[:1]
    for l in range(cfg["n_layer"]):
        p = f"layers.{l}."
        block = [s for s in dense if s[0].startswith(p)]
        if l not in experts:
            specs += block
            continue
        specs += block[:4]  # input_layernorm, qkv_proj, o_proj, post_attention_layernorm
        if cfg["moe_residual"]:
            specs += block[4:]  # mlp.gate_up_proj [C, 2I], mlp.down_proj [I, C]
        E = experts[l]
        specs.append((p + "mlp.router.weight", (C, E)))
        for e in range(E):
            x = f"{p}mlp.experts.{e}."
            specs += [(x + "gate_up_proj.weight", (C, 2 * Ie)), (x + "down_proj.weight", (Ie, C))]
    tail = dense[1 + 6 * cfg["n_layer"]:]
    assert [n for n, _ in tail] == ["norm.weight"] + ([] if cfg["tied"] else ["lm_head.weight"])
    return specs + tail


def init_value(name, shape, r, cfg):
    if is_gpt2(cfg):
        return gen_golden.init_value(name, shape, r, cfg)
    return gen_llama_golden.init_value(name, shape, r, cfg)


def init_params(cfg):
    """gen_golden's: seeds torch, draws the parameters in spec order, then input_ids."""
    return gen_golden.init_params(cfg, param_specs, init_value)


# ---------------------------------------------------------------------------------------------
# Model


def gpt2_mlp(v, P, pre):
    """GPT-2 MLP with the tensors pre + c_fc.weight/bias, c_proj.weight/bias; v [..., C]."""
    m = F.gelu(conv1d(v, P[pre + "c_fc.weight"], P[pre + "c_fc.bias"]), approximate="tanh")
    return conv1d(m, P[pre + "c_proj.weight"], P[pre + "c_proj.bias"])


def llama_mlp(v, P, pre):
    """SwiGLU with pre + gate_up_proj.weight [C, 2I] ([gate | up]) and down_proj.weight [I, C]."""
    w = P[pre + "gate_up_proj.weight"]
    gate, up = (v @ w).split(w.shape[1] // 2, dim=-1)
    return (F.silu(gate) * up) @ P[pre + "down_proj.weight"]


def router_probs(z, cfg):
    if cfg["moe_router"] == "softmax":
        return F.softmax(z, dim=-1)
    assert cfg["moe_router"] == "sigmoid", cfg["moe_router"]
    return torch.sigmoid(z)


def moe_mlp(P, pre, v, cfg, E, cf):
    """docs/moe.md's MoE layer on ln2 rows v [n, C] -> (y [n, C] without the residual, stats).
    pre: "h.{l}." or "layers.{l}."."""
    n, C = v.shape
    k = cfg["moe_top_k"]
    expert = gpt2_mlp if is_gpt2(cfg) else llama_mlp
    z = v @ P[pre + "mlp.router.weight"]  # [n, E]
    s = router_probs(z, cfg)
    # Selection: descending s (no expert bias here), ties to the lower index (stable sort).
    order = torch.sort(s.detach(), dim=-1, descending=True, stable=True).indices
    sel = order[:, :k]
    g = s.gather(1, sel)  # differentiable gates; sel is a constant
    if k > 1 and cfg["moe_norm_topk"]:
        g = g / g.sum(dim=-1, keepdim=True)
    # Capacity: slots in the priority order j = 0..k-1, i = 0..n-1.
    cap = capacity(cfg, n, E, cf)
    kept = torch.ones(n, k, dtype=torch.bool)
    if cap is not None:
        used = [0] * E
        sl = sel.tolist()
        for j in range(k):
            for i in range(n):
                e = sl[i][j]
                if used[e] < cap:
                    used[e] += 1
                else:
                    kept[i, j] = False
    # y[i] = sum over kept j (in j order) of g[i, j] expert_{sel[i, j]}(v[i]).
    y = None
    for j in range(k):
        yj = torch.zeros_like(v)
        for e in range(E):
            rows = ((sel[:, j] == e) & kept[:, j]).nonzero().squeeze(1)
            if rows.numel():
                out = expert(v.index_select(0, rows), P, f"{pre}mlp.experts.{e}.")
                yj = yj.index_add(0, rows, g.index_select(0, rows)[:, j:j + 1] * out)
        y = yj if y is None else y + yj
    # Auxiliary losses over all n rows, before drops; f is a constant.
    counts = torch.bincount(sel.reshape(-1), minlength=E)
    f = counts.to(s.dtype) / (n * k)
    bal = E * (f * s.mean(dim=0)).sum()
    zl = torch.logsumexp(z, dim=-1).pow(2).mean()
    # Selection margins: consecutive gaps among the first min(k + 1, E) sorted scores.
    m = min(k + 1, E)
    ss = s.detach().gather(1, order[:, :m])
    zs = z.detach().gather(1, order[:, :m])
    stats = dict(bal=bal, z=zl, counts=counts, dropped=int((~kept).sum()), sel=sel, cap=cap,
                 margin_s=float((ss[:, :-1] - ss[:, 1:]).min()) if m > 1 else math.inf,
                 margin_z=float((zs[:, :-1] - zs[:, 1:]).min()) if m > 1 else math.inf,
                 margin_set=float((ss[:, k - 1] - ss[:, k]).min()) if k < E else math.inf)
    return y, stats


def forward(P, idx, cfg, train=True, moe_fn=moe_mlp):
    """idx: int64 [B, T] -> (logits [B, T, V], [stats of each MoE layer in layer order]).
    train: capacity_factor (training mode) or eval_capacity_factor (forward / score)."""
    B, T = idx.shape
    C, H = cfg["n_embd"], cfg["n_head"]
    cf = cfg["moe_capacity_factor"] if train else cfg["moe_eval_capacity_factor"]
    experts = experts_per_layer(cfg)
    gpt2 = is_gpt2(cfg)
    stats = []

    def mlp_part(x, ln2, pre, l):
        """x2 -> x3: dense MLP, or MoE (+ the residual dense MLP)."""
        dense = gpt2_mlp if gpt2 else llama_mlp
        if l not in experts:
            return x + dense(ln2, P, pre + "mlp.")
        y, st = moe_fn(P, pre, ln2.reshape(B * T, C), cfg, experts[l], cf)
        stats.append(st)
        x = x + y.view(B, T, C)
        if cfg["moe_residual"]:
            x = x + dense(ln2, P, pre + "mlp.")
        return x

    if gpt2:  # gen_golden.forward's blocks
        hd = C // H
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        x = F.embedding(idx, P["wte.weight"]) + P["wpe.weight"][:T]
        for l in range(cfg["n_layer"]):
            h = f"h.{l}."
            a = F.layer_norm(x, (C,), P[h + "ln_1.weight"], P[h + "ln_1.bias"], LN_EPS)
            qkv = conv1d(a, P[h + "attn.c_attn.weight"], P[h + "attn.c_attn.bias"])
            q, k, v = qkv.split(C, dim=2)
            q = q.view(B, T, H, hd).transpose(1, 2)
            k = k.view(B, T, H, hd).transpose(1, 2)
            v = v.view(B, T, H, hd).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
            att = att.masked_fill(~mask, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
            x = x + conv1d(y, P[h + "attn.c_proj.weight"], P[h + "attn.c_proj.bias"])
            m = F.layer_norm(x, (C,), P[h + "ln_2.weight"], P[h + "ln_2.bias"], LN_EPS)
            x = mlp_part(x, m, h, l)
        x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], LN_EPS)
        return F.linear(x, P["wte.weight"]), stats

    # gen_llama_golden.forward's blocks
    nh, nkv, hd = cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"]
    eps = cfg["norm_eps"]
    cos, sin = gen_llama_golden.rope_cos_sin(cfg, T)
    dt = P["embed_tokens.weight"].dtype
    cos, sin = cos.to(dt), sin.to(dt)  # no-op in fp32; the float64 self-check runs in float64

    def heads(t, n):  # [B, T, n hd] -> [B, n, T, hd]
        return t.view(B, T, n, hd).transpose(1, 2)

    x = F.embedding(idx, P["embed_tokens.weight"])
    for l in range(cfg["n_layer"]):
        p = f"layers.{l}."
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q, k, v = (h @ P[p + "self_attn.qkv_proj.weight"]).split([nh * hd, nkv * hd, nkv * hd], -1)
        q, k, v = heads(q, nh), heads(k, nkv), heads(v, nkv)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        y = torch.stack([causal_attention(q[b], k[b], v[b]) for b in range(B)])
        x = x + y @ P[p + "self_attn.o_proj.weight"]
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        x = mlp_part(x, h, p, l)
    head = P["embed_tokens.weight"] if cfg["tied"] else P["lm_head.weight"]
    return F.linear(rms_norm(x, P["norm.weight"], eps), head), stats


def losses(logits, stats, targets, cfg):
    """(total, CE, sum L_bal, sum L_z)."""
    ce = loss_of(logits, targets)
    bal = sum(st["bal"] for st in stats)
    zl = sum(st["z"] for st in stats)
    total = ce + cfg["moe_aux_loss_coef"] * bal + cfg["moe_z_loss_coef"] * zl
    return total, ce, bal, zl


# ---------------------------------------------------------------------------------------------
# Everything a file records


def routing_records(stats, cfg):
    maxE = max(experts_per_layer(cfg).values())
    counts = torch.zeros(len(stats), maxE, dtype=torch.float32)
    for i, st in enumerate(stats):
        counts[i, :st["counts"].numel()] = st["counts"].float()
    dropped = torch.tensor([float(st["dropped"]) for st in stats], dtype=torch.float32)
    sel = torch.stack([st["sel"] for st in stats]).to(torch.int32)
    return {"route.counts": counts, "route.dropped": dropped, "route.sel": sel}


def zero_missing_grads(P):
    """An expert that no kept slot reaches gets no autograd gradient; like zeroflow's flat
    buffer, it has a zero gradient (so AdamW still decays it and its moments)."""
    for p in P.values():
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def run_all(cfg, init, ids):
    """({name: tensor} in file order except input_ids, diagnostics). gen_golden.run_all's
    procedure on the total loss, plus eval_logits, the aux terms and the routing records."""
    T = cfg["T"]
    out = {}
    P = leaf_params(init)
    x, y = batch(ids, 0, T)
    logits, stats0 = forward(P, x, cfg, train=True)
    total, ce, bal, zl = losses(logits, stats0, y, cfg)
    total.backward()
    with torch.no_grad():
        eval_logits, eval_stats = forward(P, x, cfg, train=False)
    out["logits"] = logits.detach()
    out["eval_logits"] = eval_logits.detach()
    out["loss"] = ce.detach().reshape(1)
    out["aux_loss"] = bal.detach().reshape(1)
    out["z_loss"] = zl.detach().reshape(1)
    for n in init:
        out[n] = init[n]
    zero_missing_grads(P)
    for n in init:
        out["grad." + n] = P[n].grad.detach().clone()

    P = leaf_params(init)
    decay = [p for p in P.values() if p.dim() >= 2]
    no_decay = [p for p in P.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                            foreach=False)
    ces, bals, zls, norms, lrs = [], [], [], [], []
    margin_s = margin_z = margin_set = math.inf
    for s in range(cfg["steps"]):
        x, y = batch(ids, s, T)
        logits, stats = forward(P, x, cfg, train=True)
        total, ce, bal, zl = losses(logits, stats, y, cfg)
        for st in stats:
            margin_s = min(margin_s, st["margin_s"])
            margin_z = min(margin_z, st["margin_z"])
            margin_set = min(margin_set, st["margin_set"])
        ces.append(ce.detach().reshape(1))
        bals.append(bal.detach().reshape(1))
        zls.append(zl.detach().reshape(1))
        total.backward()
        zero_missing_grads(P)
        norms.append(torch.nn.utils.clip_grad_norm_(list(P.values()), cfg["grad_clip"]).detach()
                     .reshape(1).float())
        lr_s = lr_at(s, cfg)
        lrs.append(lr_s)
        for g in opt.param_groups:
            g["lr"] = lr_s
        opt.step()
        opt.zero_grad(set_to_none=True)
    for n in init:
        out["final." + n] = P[n].detach().clone()
    out["train_losses"] = torch.cat(ces)
    out["train_aux_losses"] = torch.cat(bals)
    out["train_z_losses"] = torch.cat(zls)
    out["train_grad_norms"] = torch.cat(norms)
    out["train_lrs"] = torch.tensor(lrs, dtype=torch.float32)
    out.update(routing_records(stats0, cfg))
    diag = dict(margin_s=margin_s, margin_z=margin_z, margin_set=margin_set,
                caps=[st["cap"] for st in stats0], eval_caps=[st["cap"] for st in eval_stats],
                eval_dropped=[st["dropped"] for st in eval_stats])
    return out, diag


def check_robust(cfg, res, diag, name):
    """The asserted properties of a file's numbers (generate and --check)."""
    assert diag["margin_s"] > MIN_MARGIN and diag["margin_z"] > MIN_MARGIN, \
        f"{name}: a top-k selection is on a near tie ({diag}): choose another seed"
    if name == "moe_gpt2_top1.safetensors":
        assert float(res["route.dropped"].sum()) >= 1, f"{name}: no token dropped at step 0"
    if cfg["moe_dropless"]:
        assert float(res["route.dropped"].sum()) == 0
        assert torch.equal(res["logits"], res["eval_logits"])
    n = cfg["B"] * cfg["T"]
    assert torch.all(res["route.counts"].sum(1) == n * cfg["moe_top_k"])
    assert torch.equal(res["train_losses"][:1], res["loss"])


def file_tensors(ids, res):
    tensors = [("input_ids", "I32", ids.numpy())]
    tensors += [(n, "I32" if t.dtype == torch.int32 else "F32", t.numpy()) for n, t in res.items()]
    for n, dtype, a in tensors:
        assert a.dtype == (np.int32 if dtype == "I32" else np.float32), n
    return tensors


def expected_names(cfg):
    names = [n for n, _ in param_specs(cfg)]
    return (["input_ids", "logits", "eval_logits", "loss", "aux_loss", "z_loss"] + names
            + ["grad." + n for n in names] + ["final." + n for n in names]
            + ["train_losses", "train_aux_losses", "train_z_losses", "train_grad_norms",
               "train_lrs", "route.counts", "route.dropped", "route.sel"])


def metadata(cfg):
    md = config_metadata(cfg)
    if not is_gpt2(cfg):
        del md["ln_eps"]  # gen_golden's GPT-2 LayerNorm eps; a Llama has norm_eps
    md["generator"] = GENERATOR
    return md


def config_from_metadata(md, like):
    return {k: type(v)(md[k]) for k, v in like.items()}


def summary(name, res, diag):
    tl = res["train_losses"]
    return (f"{name}: CE {res['loss'].item():.6f} aux {res['aux_loss'].item():.6f} "
            f"z {res['z_loss'].item():.6f} (step 0); train CE {tl[0].item():.4f} -> "
            f"{tl[-1].item():.4f}; caps {diag['caps']} dropped {res['route.dropped'].tolist()} "
            f"(eval caps {diag['eval_caps']} dropped {diag['eval_dropped']}); "
            f"counts {res['route.counts'].tolist()}; min margins over steps: "
            f"s {diag['margin_s']:.3g} z {diag['margin_z']:.3g} "
            f"k-th vs (k+1)-th s {diag['margin_set']:.3g}")


# ---------------------------------------------------------------------------------------------
# Self-checks


def moe_mlp_loop(P, pre, v, cfg, E, cf):
    """docs/moe.md's MoE layer as a plain per-row loop (forward only, no autograd)."""
    n, C = v.shape
    k = cfg["moe_top_k"]
    expert = gpt2_mlp if is_gpt2(cfg) else llama_mlp
    w = P[pre + "mlp.router.weight"]
    z = [[float(sum(v[i, c] * w[c, e] for c in range(C))) for e in range(E)] for i in range(n)]
    if cfg["moe_router"] == "softmax":
        s = []
        for zi in z:
            mx = max(zi)
            ex = [math.exp(a - mx) for a in zi]
            s.append([a / sum(ex) for a in ex])
    else:
        s = [[1.0 / (1.0 + math.exp(-a)) for a in zi] for zi in z]
    sel = [sorted(range(E), key=lambda e: (-s[i][e], e))[:k] for i in range(n)]
    g = []
    for i in range(n):
        gi = [s[i][e] for e in sel[i]]
        if k > 1 and cfg["moe_norm_topk"]:
            tot = sum(gi)
            gi = [a / tot for a in gi]
        g.append(gi)
    kept = [[True] * k for _ in range(n)]
    if not cfg["moe_dropless"]:
        cap = min(n, max(cfg["moe_min_capacity"], math.ceil(((cf * n) * k) / E)))
        used = [0] * E
        for j in range(k):
            for i in range(n):
                if used[sel[i][j]] < cap:
                    used[sel[i][j]] += 1
                else:
                    kept[i][j] = False
    y = torch.zeros_like(v)
    for i in range(n):
        for j in range(k):
            if kept[i][j]:
                y[i] += g[i][j] * expert(v[i:i + 1], P, f"{pre}mlp.experts.{sel[i][j]}.")[0]
    count = [sum(row.count(e) for row in sel) for e in range(E)]
    bal = E * sum(count[e] / (n * k) * sum(s[i][e] for i in range(n)) / n for e in range(E))
    zl = 0.0
    for zi in z:
        mx = max(zi)
        zl += (mx + math.log(sum(math.exp(a - mx) for a in zi))) ** 2
    st = dict(bal=torch.tensor(bal, dtype=v.dtype), z=torch.tensor(zl / n, dtype=v.dtype),
              counts=torch.tensor(count), dropped=sum(not a for r in kept for a in r),
              sel=torch.tensor(sel))
    return y, st


def self_check_dense(cfg):
    """No MoE layer: the twin is the dense twin, bit for bit."""
    c = dict(cfg, moe_num_experts=0, moe_layer_experts="")
    dense_specs = (gen_golden if is_gpt2(cfg) else gen_llama_golden).param_specs(c)
    assert param_specs(c) == dense_specs
    init, ids = init_params(c)
    idx = ids[0, :, :c["T"]].long()
    with torch.no_grad():
        ours, stats = forward(init, idx, c)
        ref = (gen_golden if is_gpt2(cfg) else gen_llama_golden).forward(init, idx, c)
    assert not stats and torch.equal(ours, ref), "dense twin differs"


def self_check_single_expert(cfg):
    """E = 1, k = 1, dropless, softmax: gate 1, the expert holding the dense MLP's tensors gives
    the dense model's logits; L_bal = 1, L_z = mean z^2."""
    I = 4 * cfg["n_embd"] if is_gpt2(cfg) else cfg["intermediate"]
    c = dict(cfg, moe_num_experts=1, moe_top_k=1, moe_layer_experts="", moe_dropless=1,
             moe_router="softmax", moe_residual=0, moe_expert_intermediate=I)
    d = dict(cfg, moe_num_experts=0, moe_layer_experts="")
    dense, ids = init_params(d)
    P = {}
    for name, shape in param_specs(c):
        if ".mlp.experts.0." in name:
            P[name] = dense[name.replace(".mlp.experts.0.", ".mlp.")]
        elif name.endswith("mlp.router.weight"):
            P[name] = torch.randn(shape, generator=torch.Generator().manual_seed(7)) * 0.1
        else:
            P[name] = dense[name]
    idx = ids[0, :, :c["T"]].long()
    with torch.no_grad():
        ours, stats = forward(P, idx, c)
        ref, _ = forward(dense, idx, d)
    dd = max_diff(ours.numpy(), ref.numpy())
    assert dd <= 1e-6, f"single-expert MoE differs from the dense model by {dd}"
    assert all(float(st["bal"]) == 1.0 and st["dropped"] == 0 for st in stats)
    return dd


def to64(P):
    return {n: t.detach().double() for n, t in P.items()}


def self_check_loop(cfg, init, ids):
    """The vectorised MoE layer against the plain loop (float64, both capacities)."""
    P = to64(init)
    idx = ids[0, :, :cfg["T"]].long()
    worst = 0.0
    with torch.no_grad():
        for train in (True, False):
            a, sa = forward(P, idx, cfg, train)
            b, sb = forward(P, idx, cfg, train, moe_fn=moe_mlp_loop)
            worst = max(worst, max_diff(a.numpy(), b.numpy()))
            for x, y in zip(sa, sb):
                assert torch.equal(x["sel"], y["sel"]) and torch.equal(x["counts"], y["counts"])
                assert x["dropped"] == y["dropped"]
                assert abs(float(x["bal"]) - float(y["bal"])) <= 1e-12
                assert abs(float(x["z"]) - float(y["z"])) <= 1e-12
    assert worst <= 1e-12, f"vectorised MoE layer vs loop: {worst}"
    return worst


def fd_entries(cfg):
    """(parameter, flat index) pairs: a router, expert matrices (+ a gpt2 expert bias) and a
    norm weight of the last MoE layer, and the first MoE layer's router."""
    layers = moe_layers(cfg)
    l, l0 = layers[-1], layers[0]
    if is_gpt2(cfg):
        pre, pre0 = f"h.{l}.", f"h.{l0}."
        names = [pre0 + "mlp.router.weight", pre + "mlp.router.weight",
                 pre + "mlp.experts.0.c_fc.weight", pre + "mlp.experts.1.c_proj.weight",
                 pre + "mlp.experts.0.c_fc.bias", pre + "ln_2.weight"]
    else:
        pre, pre0 = f"layers.{l}.", f"layers.{l0}."
        names = [pre0 + "mlp.router.weight", pre + "mlp.router.weight",
                 pre + "mlp.experts.0.gate_up_proj.weight", pre + "mlp.experts.1.down_proj.weight",
                 pre + "post_attention_layernorm.weight"]
    return list(dict.fromkeys(names))


def self_check_fd(cfg, init, ids):
    """float64: autograd's d CE, d sum L_bal, d sum L_z against central differences."""
    x, y = batch(ids, 0, cfg["T"])
    base = to64(init)

    def terms(P):
        logits, stats = forward(P, x, cfg, train=True)
        _, ce, bal, zl = losses(logits, stats, y, cfg)
        return [ce, bal, zl], [st["sel"] for st in stats]

    P = leaf_params(base)
    vals, sel0 = terms(P)
    grads = {}
    for t, v in zip(("ce", "bal", "z"), vals):
        ps = [P[n] for n in fd_entries(cfg)]
        gs = torch.autograd.grad(v, ps, retain_graph=True, allow_unused=True)
        grads[t] = {n: torch.zeros_like(p) if g is None else g
                    for n, p, g in zip(fd_entries(cfg), ps, gs)}
    h = 1e-6
    worst, checked = 0.0, 0
    for n in fd_entries(cfg):
        g_any = (grads["ce"][n].abs() + grads["bal"][n].abs() + grads["z"][n].abs()).reshape(-1)
        picks = sorted({0, int(g_any.argmax()), int(grads["bal"][n].abs().reshape(-1).argmax())})
        for fi in picks:
            res = []
            for sign in (1, -1):
                Q = dict(base)
                Q[n] = base[n].clone()
                Q[n].view(-1)[fi] += sign * h
                with torch.no_grad():
                    v, sel = terms(Q)
                assert all(torch.equal(a, b) for a, b in zip(sel, sel0)), "FD moved a selection"
                res.append([float(t) for t in v])
            for ti, t in enumerate(("ce", "bal", "z")):
                fd = (res[0][ti] - res[1][ti]) / (2 * h)
                ad = float(grads[t][n].reshape(-1)[fi])
                err = abs(fd - ad)
                worst = max(worst, err / max(1.0, abs(ad)))
                assert err <= 1e-7 * max(1.0, abs(ad)), f"FD {n}[{fi}] d{t}: autograd {ad} fd {fd}"
                checked += 1
    # Nonzero aux gradients reach a router (P and z are differentiated).
    r = next(n for n in reversed(fd_entries(cfg)) if n.endswith("router.weight"))
    assert float(grads["bal"][r].abs().max()) > 0 and float(grads["z"][r].abs().max()) > 0
    return worst, checked


def self_checks(name, cfg, init, ids):
    self_check_dense(cfg)
    d1 = self_check_single_expert(cfg)
    d2 = self_check_loop(cfg, init, ids)
    fw, fn = self_check_fd(cfg, init, ids)
    print(f"  self-checks OK: dense twin exact, single-expert vs dense {d1:.3g}, "
          f"vectorised vs loop (f64) {d2:.3g}, {fn} FD derivatives (f64) max rel err {fw:.3g}")


# ---------------------------------------------------------------------------------------------


def generate_one(path, cfg):
    name = os.path.basename(path)
    init, ids = init_params(cfg)
    assert [n for n in init] == [n for n, _ in param_specs(cfg)]
    res, diag = run_all(cfg, init, ids)
    check_robust(cfg, res, diag, name)
    tensors = file_tensors(ids, res)
    assert [t[0] for t in tensors] == expected_names(cfg)
    write_safetensors(path, tensors, metadata(cfg))
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")
    print("  " + summary(name, res, diag))
    self_checks(name, cfg, init, ids)


def check_one(path, cfg):
    name = os.path.basename(path)
    meta, st = read_safetensors(path)
    got = config_from_metadata(meta, cfg)
    assert got == cfg, f"metadata config {got} != script config {cfg}"
    assert meta == {**metadata(cfg), "torch_version": meta["torch_version"]}, "metadata differs"
    assert list(st) == expected_names(cfg), "tensor set/order differs from the spec"
    specs = param_specs(cfg)
    names = [n for n, _ in specs]
    for n, shape in specs:
        for p in ("", "grad.", "final."):
            assert st[p + n].shape == shape and st[p + n].dtype == np.float32, p + n
    ids = torch.from_numpy(st["input_ids"].copy())
    assert ids.shape == (cfg["steps"], cfg["B"], cfg["T"] + 1)
    assert int(ids.min()) >= 0 and int(ids.max()) < cfg["vocab_size"]
    n_moe, k = len(moe_layers(cfg)), cfg["moe_top_k"]
    n = cfg["B"] * cfg["T"]
    assert st["route.sel"].shape == (n_moe, n, k) and st["route.sel"].dtype == np.int32
    assert st["route.counts"].shape == (n_moe, max(experts_per_layer(cfg).values()))
    assert st["route.dropped"].shape == (n_moe,)

    # Everything re-run from the file's weights and ids.
    init = {n: torch.from_numpy(st[n].copy()) for n in names}
    res, diag = run_all(cfg, init, ids)
    check_robust(cfg, res, diag, name)
    worst = 0.0
    for n, t in res.items():
        ref = st[n]
        assert t.numpy().shape == ref.shape and t.numpy().dtype == ref.dtype, n
        if n.startswith("route."):
            assert np.array_equal(t.numpy(), ref), f"{n} differs"
            continue
        d = max_diff(t.numpy(), ref)
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        worst = max(worst, d / scale)
        assert d <= 1e-5 * scale, f"{n}: max |diff| {d}"
    print(f"{name}: re-run max scaled |diff| {worst:.3g}")
    print("  " + summary(name, res, diag))

    # The seed reproduces the stored weights and ids exactly (determinism).
    init2, ids2 = init_params(cfg)
    assert all(np.array_equal(init2[n].numpy(), st[n]) for n in names), "init not reproducible"
    assert np.array_equal(ids2.numpy(), st["input_ids"]), "input_ids not reproducible"
    self_checks(name, cfg, init, ids)
    print(f"check OK: {path}")


def generate(folder):
    for fname, cfg in CONFIGS.items():
        generate_one(os.path.join(folder, fname), cfg)


def check(folder):
    for fname, cfg in CONFIGS.items():
        check_one(os.path.join(folder, fname), cfg)


def main():
    return gen_golden.cli(__doc__, HERE, "folder of the four golden files", generate, check)


if __name__ == "__main__":
    sys.exit(main())
