// Inference weights as views over the canonical flat layout (lm_weights.hpp).
#include "runtime/model/lm_weights.hpp"

#include <cstring>

#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"

namespace zf {

lm_weights make_lm_weights(const model_spec& spec, fbuffer flat) {
  lm_weights w;
  w.cfg = spec;
  w.layout = make_layout(spec);
  if (flat.size() != w.layout.total)
    fail("lm_weights: {} floats given, the {} spec's layout has {}", flat.size(),
         arch_name(spec.arch), w.layout.total);
  w.store = std::move(flat);
  const float* base = w.store.data();
  auto g = w.layout.globals<const float>(base);
  w.tok_emb = g.tok_emb;
  w.pos_emb = g.pos_emb;
  w.normf_w = g.normf_w;
  w.normf_b = g.normf_b;
  w.head = g.head ? g.head : g.tok_emb;
  for (int l = 0; l < spec.n_layer; ++l) w.layers.push_back(w.layout.block<const float>(base, l));
  return w;
}

void attach_quant(lm_weights& w, std::shared_ptr<const lm_quant> q) {
  const model_spec& c = w.cfg;
  if (q) {
    if (q->blocks.size() != w.layers.size() || q->linears.size() != 4 * w.layers.size())
      fail("quantized linears for {} layers given to the {}-layer model {}", q->blocks.size(),
           w.layers.size(), c.name);
    const int shapes[4][2] = {{c.hidden, c.qkv_dim()},
                              {c.q_dim(), c.hidden},
                              {c.hidden, c.up_dim()},
                              {c.intermediate, c.hidden}};
    for (std::size_t i = 0; i < q->linears.size(); ++i) {
      const quant_linear& ql = q->linears[i];
      if (ql.n == 0 && i % 4 >= 2 && !c.dense_mlp(int(i / 4))) continue;  // no dense MLP here
      if (ql.k != shapes[i % 4][0] || ql.n != shapes[i % 4][1])
        fail("quantized linear {} of layer {} is [{} in, {} out]; the model's is [{}, {}]", i % 4,
             i / 4, ql.k, ql.n, shapes[i % 4][0], shapes[i % 4][1]);
    }
    std::size_t e2 = 0;  // the experts' linears: up, down per expert of each layer
    for (std::size_t l = 0; l < q->layer_experts.size(); ++l) {
      const int E = q->layer_experts[l];
      if (E && E != c.moe.experts_of(int(l)))
        fail("quantized experts: layer {} has {} of the model's {}", l, E,
             c.moe.experts_of(int(l)));
      for (int e = 0; e < E; ++e, e2 += 2) {
        const quant_linear &u = q->expert_linears.at(e2), &d = q->expert_linears.at(e2 + 1);
        if (u.k != c.hidden || u.n != c.expert_up_dim() || d.k != c.moe.expert_intermediate ||
            d.n != c.hidden)
          fail("quantized expert {} of layer {} has shapes [{}, {}] / [{}, {}]", e, l, u.k, u.n,
               d.k, d.n);
      }
    }
    if (e2 != q->expert_linears.size())
      fail("{} quantized expert linears for {} expert projections", q->expert_linears.size(), e2);
    if (q->head && (q->head->k != c.hidden || q->head->n != c.vocab_size))
      fail("the quantized head is [{} in, {} out]; the model's is [{}, {}]", q->head->k, q->head->n,
           c.hidden, c.vocab_size);
  }
  for (std::size_t l = 0; l < w.layers.size(); ++l) w.layers[l].quant = q ? &q->blocks[l] : nullptr;
  w.quant = std::move(q);
}

lm_weights copy_lm_weights(const model_spec& spec, const float* flat, device where) {
  fbuffer store(make_layout(spec).total, where);
  store.upload(flat, store.size());
  return make_lm_weights(spec, std::move(store));
}

lm_weights lm_weights_of(const model_config& m, const float* flat, const std::string& name) {
  model_spec spec = spec_of(m);
  spec.name = name;
  return copy_lm_weights(spec, flat);
}

}  // namespace zf
