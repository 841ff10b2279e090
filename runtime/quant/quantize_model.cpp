// Quantizing a whole model (quantize_model.hpp).
#include "runtime/quant/quantize_model.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "runtime/core/error.hpp"
#include "runtime/model/model.hpp"
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
  if (o.lorc_rank > 0) {
    low_rank lr = lorc(m.w, m.sk, m.sn, q.view(), o.lorc_rank);
    q.rank = lr.rank;
    q.lorc_a = std::move(lr.a);
    q.lorc_b = std::move(lr.b);
  }
  return q;
}

// Hessians of the projections of one layer (or of the head, layer -1) from the observer.
struct collector : transformer::linear_observer {
  int layer;
  std::vector<hessian> h;
  collector(int l, const std::vector<int>& widths) : layer(l) {
    for (int w : widths) h.emplace_back(w);
  }
  void input(int l, int which, const float* x, int rows) override {
    if (l != layer) return;
    h[sz(l < 0 ? 0 : which)].add(x, rows);
  }
};

void run_calibration(transformer& m, const calibration& cal) {
  const int per = std::max(1, 4096 / cal.t);  // windows per forward
  for (int w0 = 0; w0 < cal.windows; w0 += per) {
    const int b = std::min(per, cal.windows - w0);
    m.forward_hidden(cal.ids.data() + sz(w0) * cal.t, b, cal.t);
  }
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
                                         const quantize_options& o, const calibration* cal) {
  const bool gptq = o.method == "gptq";
  if (!gptq && o.method != "rtn")
    fail("--method: unknown method '{}' (expected rtn or gptq)", o.method);
  if (gptq && (!cal || cal->windows <= 0 || cal->t <= 0))
    fail("--method gptq needs calibration text (--calibration FILE, or the corpus)");
  auto q = std::make_shared<lm_quant>();
  q->scheme = o.s.name;
  q->method = o.method + (o.lorc_rank > 0 ? fmt::format("+lorc{}", o.lorc_rank) : "");
  const param_layout layout = make_layout(spec);
  const int L = spec.n_layer, C = spec.hidden;
  q->linears.resize(sz(4) * L);
  q->blocks.assign(sz(L), {});
  std::unique_ptr<transformer> m;
  if (gptq) {  // the model the calibration runs through, its layers quantized as we go
    m = std::make_unique<transformer>(spec, true, false);
    std::memcpy(m->params().data(), flat, layout.total * sizeof(float));
    m->set_quant(q);
  }
  const int widths[4] = {C, spec.q_dim(), C, spec.intermediate};
  const char* names[4] = {"the qkv projection", "the attention output", "the MLP up projection",
                          "the MLP down projection"};
  for (int l = 0; l < L; ++l) {
    const auto b = layout.block<const float>(flat, l);
    const float* ws[4] = {b.qkv_w, b.o_w, b.up_w, b.down_w};
    const int outs[4] = {spec.qkv_dim(), C, spec.up_dim(), C};
    std::unique_ptr<collector> col;
    if (gptq) {
      col = std::make_unique<collector>(l, std::vector<int>(widths, widths + 4));
      m->set_observer(col.get());
      run_calibration(*m, *cal);
      m->set_observer(nullptr);
    }
    for (int i = 0; i < 4; ++i)
      q->linears[sz(4 * l + i)] =
          quantize_one({ws[i], sz(outs[i]), 1, widths[i], outs[i]}, o,
                       col ? &col->h[sz(i)] : nullptr, fmt::format("{} of layer {}", names[i], l));
    // layer l now runs quantized in the calibration forward (later ones stay fp32 until theirs)
    q->blocks[sz(l)] = {&q->linears[sz(4 * l)], &q->linears[sz(4 * l + 1)],
                        &q->linears[sz(4 * l + 2)], &q->linears[sz(4 * l + 3)]};
  }
  if (o.head) {
    const auto g = layout.globals<const float>(flat);
    const float* head = g.head ? g.head : g.tok_emb;  // [V, C]: (j, o) at head[o * C + j]
    std::unique_ptr<collector> col;
    if (gptq) {
      col = std::make_unique<collector>(-1, std::vector<int>{C});
      m->set_observer(col.get());
      run_calibration(*m, *cal);
      m->set_observer(nullptr);
    }
    q->head = std::make_unique<quant_linear>(quantize_one(
        {head, 1, sz(C), C, spec.vocab_size}, o, col ? &col->h[0] : nullptr, "the LM head"));
  }
  return q;
}

}  // namespace zf::quant
