// Quantizing a whole model (quantize_model.hpp).
#include "runtime/quant/quantize_model.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/embedding.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/block.hpp"
#include "runtime/model/model.hpp"
#include "runtime/quant/lkd.hpp"
#include "runtime/quant/lorc.hpp"

namespace zf::quant {

namespace k = zf::kernels;
using sz = std::size_t;

const std::vector<std::string>& scheme_names() {
  static const std::vector<std::string> names = {"w8a8", "w4a16", "fp8", "fp8_e5m2", "fp6", "fp4"};
  return names;
}

scheme scheme_named(const std::string& name, int group_size, const std::string& option) {
  scheme s;
  s.name = name;
  if (name == "w8a8") {
    s.fmt = k::qformat::int8;
    s.group = 128;
    s.act_int8 = true;
  } else if (name == "w4a16") {
    s.fmt = k::qformat::int4;
    s.group = 128;
    s.asym = true;
  } else if (name == "fp8") {
    s.fmt = k::qformat::fp8_e4m3;
  } else if (name == "fp8_e5m2") {
    s.fmt = k::qformat::fp8_e5m2;
  } else if (name == "fp6") {
    s.fmt = k::qformat::fp6_e3m2;
  } else if (name == "fp4") {
    s.fmt = k::qformat::fp4_e2m1;
    s.group = 128;
    s.pow2 = true;
  } else {
    fail("{}: unknown scheme '{}' (expected one of {})", option, name,
         fmt::join(scheme_names(), ", "));
  }
  if (group_size > 0) s.group = group_size;
  return s;
}

namespace {

// One matrix: element (j, o) at w[j * sk + o * sn], k inputs, n outputs.
struct matrix_ref {
  const float* w;
  sz sk, sn;
  int k, n;
};

// The initial quantization of one matrix (RTN, or GPTQ with h), without LoRC.
quant_linear quantize_one(const matrix_ref& m, const quantize_options& o, const hessian* h,
                          const std::string& what) {
  quant_linear q;
  q.fmt = o.s.fmt;
  q.k = m.k;
  q.n = m.n;
  q.group = o.s.group > 0 ? o.s.group : m.k;
  q.asym = o.s.asym;
  q.act_int8 = o.s.act_int8;
  if (m.k % q.group != 0 || q.group % 32 != 0)
    fail(
        "--group-size {}: {} has {} inputs; the group size must be a multiple of 32 that "
        "divides it",
        q.group, what, m.k);
  q.data.resize(k::packed_row_bytes(q.fmt, m.k) * m.n);
  q.scales.resize(sz(m.n) * (m.k / q.group));
  if (q.asym) q.zeros.resize(q.scales.size());
  std::uint8_t* zeros = q.asym ? q.zeros.data() : nullptr;
  if (h)
    gptq_quantize(q.fmt, m.w, m.sk, m.sn, m.k, m.n, q.group, q.asym, o.s.pow2, h->matrix(), o.gptq,
                  q.data.data(), q.scales.data(), zeros);
  else
    k::quantize_rtn(q.fmt, m.w, m.sk, m.sn, m.k, m.n, q.group, q.asym, o.s.pow2, q.data.data(),
                    q.scales.data(), zeros);
  return q;
}

// LoRC of q's final error against the float weights m (after GPTQ and LKD).
void add_lorc(quant_linear& q, const matrix_ref& m, int rank) {
  low_rank lr = lorc(m.w, m.sk, m.sn, q.view(), rank);
  q.rank = lr.rank;
  q.lorc_a = std::move(lr.a);
  q.lorc_b = std::move(lr.b);
}

// Hessians of the four projections of the block the runner holds (its observer's layer 0).
struct collector : transformer::linear_observer {
  std::vector<hessian> h;
  explicit collector(const std::vector<int>& widths) {
    for (int w : widths) h.emplace_back(w);
  }
  void input(int, int which, const float* x, int rows) override { h[sz(which)].add(x, rows); }
};

// The calibration windows' embeddings: the hidden states entering layer 0, [windows * t, C].
std::vector<float> embedded(const model_spec& spec, const param_layout& layout, const float* flat,
                            const calibration& cal) {
  for (int id : cal.ids)
    if (id < 0 || id >= spec.vocab_size)
      fail("calibration token id {} out of range 0..{}", id, spec.vocab_size - 1);
  std::vector<float> x(sz(cal.windows) * cal.t * spec.hidden);
  const auto g = layout.globals<const float>(flat);
  k::embedding_forward(cal.ids.data(), g.tok_emb, g.pos_emb, x.data(), cal.windows, cal.t,
                       spec.hidden);
  return x;
}

// The block the runner holds over every window of x [windows * t, C], a few windows per forward:
// out [windows * t, C] (may be x).
void run_block(layer_runner& run, const float* x, const calibration& cal, float* out) {
  // windows per forward: ~1024 rows, as an LKD step's 4 windows of 256 (the lone block's
  // transformer plans logits [rows, V] too, unused here)
  const int per = std::max(1, 1024 / cal.t);
  const sz rows = sz(cal.t) * run.spec().hidden;
  for (int w0 = 0; w0 < cal.windows; w0 += per)
    run.forward(x + sz(w0) * rows, std::min(per, cal.windows - w0), cal.t, out + sz(w0) * rows);
}

// LKD of one layer's quantized projections ql (their codes re-rounded in place). The masters
// start where ql's codes are round-to-nearest: the float weights ws for RTN (as ZeroQuant), GPTQ's
// dequantized weights for GPTQ (rounding the float weights would lose GPTQ's codes).
void lkd_one(layer_runner& run, const std::vector<float>& x, const std::vector<float>& y,
             const calibration& cal, const quantize_options& o, bool gptq, const float* const ws[4],
             quant_linear* const ql[4], quantize_report* report) {
  std::vector<float> deq[4];
  const float* init[4];
  for (int i = 0; i < 4; ++i) {
    init[i] = ws[i];
    if (!gptq) continue;
    deq[i].resize(sz(ql[i]->k) * ql[i]->n);
    k::dequantize(ql[i]->view(), deq[i].data());
    init[i] = deq[i].data();
  }
  const lkd_report r = lkd_layer(run, x.data(), y.data(), cal.windows, cal.t, ql, init,
                                 {o.lkd_steps, o.lkd_lr, o.lkd_windows});
  if (report) report->lkd.push_back({r.mse_before, r.mse_after, r.improved});
}

}  // namespace

calibration calibration_windows(const std::vector<int>& ids, int windows, int t,
                                const std::string& what) {
  const long long n = static_cast<long long>(ids.size());
  if (t <= 0 || n < t + 1)
    fail("{}: {} tokens, calibration needs at least {} (one window)", what, n, t + 1);
  calibration c;
  c.t = t;
  c.windows = static_cast<int>(std::min<long long>(windows, n / t));
  const long long step = c.windows > 1 ? (n - t) / (c.windows - 1) : 0;
  for (int w = 0; w < c.windows; ++w)
    c.ids.insert(c.ids.end(), ids.begin() + w * step, ids.begin() + w * step + t);
  return c;
}

std::shared_ptr<lm_quant> quantize_model(const model_spec& spec, const float* flat,
                                         const quantize_options& o, const calibration* cal,
                                         quantize_report* report) {
  if (spec.moe.any())
    fail(
        "quantize: Mixture-of-Experts models (model.moe) are not quantized yet: their experts "
        "have no quantized kernels; use the float checkpoint");
  const bool gptq = o.method == "gptq", lkd = o.lkd_steps > 0;
  if (!gptq && o.method != "rtn")
    fail("--method: unknown method '{}' (expected rtn or gptq)", o.method);
  const bool have_cal = cal && cal->windows > 0 && cal->t > 0;
  if (gptq && !have_cal)
    fail("--method gptq needs calibration text (--calibration FILE, or the corpus)");
  if (o.lkd_steps < 0) fail("--lkd-steps {}: expected 0 (no LKD) or more steps", o.lkd_steps);
  if (lkd && !have_cal)
    fail("--lkd-steps {}: LKD needs calibration text (--calibration FILE, or the corpus)",
         o.lkd_steps);
  if (lkd && !(o.lkd_lr > 0)) fail("--lkd-lr {}: expected a positive learning rate", o.lkd_lr);
  auto q = std::make_shared<lm_quant>();
  q->scheme = o.s.name;
  q->method =
      o.method + (lkd ? "+lkd" : "") + (o.lorc_rank > 0 ? fmt::format("+lorc{}", o.lorc_rank) : "");
  if (report) report->lkd.clear();
  const param_layout layout = make_layout(spec);
  const int L = spec.n_layer, C = spec.hidden;
  q->linears.resize(sz(4) * L);  // never resized again: blocks point into it
  q->blocks.assign(sz(L), {});
  // x: the windows' hidden states entering layer l, the layers before it quantized; y: the float
  // layer's output on them (LKD's teacher)
  std::unique_ptr<layer_runner> run;
  std::vector<float> x, y;
  if (gptq || lkd) {
    run = std::make_unique<layer_runner>(spec);
    x = embedded(spec, layout, flat, *cal);
    y.resize(x.size());
  }
  const int widths[4] = {C, spec.q_dim(), C, spec.intermediate};
  const char* names[4] = {"the qkv projection", "the attention output", "the MLP up projection",
                          "the MLP down projection"};
  for (int l = 0; l < L; ++l) {
    const auto b = layout.block<const float>(flat, l);
    const float* ws[4] = {b.qkv_w, b.o_w, b.up_w, b.down_w};
    const int outs[4] = {spec.qkv_dim(), C, spec.up_dim(), C};
    std::unique_ptr<collector> col;
    if (run) {  // the float layer on x: GPTQ's Hessians and LKD's teacher
      run->load(flat, l);
      run->set_quant(nullptr);
      if (gptq) col = std::make_unique<collector>(std::vector<int>(widths, widths + 4));
      run->set_observer(col.get());
      run_block(*run, x.data(), *cal, y.data());
      run->set_observer(nullptr);
    }
    quant_linear* ql[4];
    for (int i = 0; i < 4; ++i) {
      ql[i] = &q->linears[sz(4 * l + i)];
      *ql[i] =
          quantize_one({ws[i], sz(outs[i]), 1, widths[i], outs[i]}, o,
                       col ? &col->h[sz(i)] : nullptr, fmt::format("{} of layer {}", names[i], l));
    }
    if (lkd) lkd_one(*run, x, y, *cal, o, gptq, ws, ql, report);
    for (int i = 0; i < 4 && o.lorc_rank > 0; ++i)
      add_lorc(*ql[i], {ws[i], sz(outs[i]), 1, widths[i], outs[i]}, o.lorc_rank);
    q->blocks[sz(l)] = {ql[0], ql[1], ql[2], ql[3]};
    if (run && (l + 1 < L || (gptq && o.head))) {  // x becomes the next layer's input
      run->set_quant(&q->blocks[sz(l)]);
      run_block(*run, x.data(), *cal, x.data());
      run->set_quant(nullptr);
    }
  }
  if (o.head) {
    const auto g = layout.globals<const float>(flat);
    const float* head = g.head ? g.head : g.tok_emb;  // [V, C]: (j, o) at head[o * C + j]
    std::unique_ptr<hessian> h;
    if (gptq) {  // the head's inputs: the final norm of the last quantized layer's output
      h = std::make_unique<hessian>(C);
      block::norm_forward(spec, x.data(), g.normf_w, g.normf_b, y.data(), nullptr, nullptr,
                          cal->windows * cal->t);
      h->add(y.data(), cal->windows * cal->t);
    }
    q->head = std::make_unique<quant_linear>(
        quantize_one({head, 1, sz(C), C, spec.vocab_size}, o, h.get(), "the LM head"));
    if (o.lorc_rank > 0) add_lorc(*q->head, {head, 1, sz(C), C, spec.vocab_size}, o.lorc_rank);
  }
  return q;
}

}  // namespace zf::quant
