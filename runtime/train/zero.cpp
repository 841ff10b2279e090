#include "runtime/train/zero.hpp"

#include <algorithm>
#include <cstring>

#include "kernels/activation.hpp"
#include "kernels/adamw.hpp"
#include "runtime/core/error.hpp"

namespace zf {

zero_partition::zero_partition(const std::vector<region>& rs, int w) : world(w), regions(rs) {
  if (w < 1) fail("ZeRO: world size must be at least 1, got {}", w);
  for (auto& r : regions) {
    std::size_t c = (r.size() + w - 1) / w;
    c = (c + 15) / 16 * 16;  // keep every chunk 64-byte aligned inside the owned buffers
    packed.push_back(owned_size);
    chunk.push_back(c);
    owned_size += c;
  }
}

region zero_partition::owned(int r, std::size_t i) const {
  const region& g = regions[i];
  std::size_t b = std::min(g.size(), std::size_t(r) * chunk[i]);
  std::size_t e = std::min(g.size(), std::size_t(r + 1) * chunk[i]);
  return {g.begin + b, g.begin + e};
}

std::size_t zero_partition::max_bucket() const {
  std::size_t m = 0;
  for (auto c : chunk) m = std::max(m, c * world);
  return m;
}

// Stage 3: a region's parameters are all-gathered from the owners just before use.
struct zero_rank::param_gather : region_access {
  zero_rank& z;
  explicit param_gather(zero_rank& zr) : z(zr) {}
  float* acquire(int r) override {
    auto& p = z.part_;
    z.comm_.all_gather(z.owned_params_.data() + p.packed[r], z.bucket_.data(), p.chunk[r]);
    return z.bucket_.data();
  }
  void release(int) override {}  // the bucket is simply reused by the next region
};

// Stages 2, 3: a region's gradients go to a zeroed bucket and are reduce-scattered into the
// owners' accumulators as soon as backward is done with the region.
struct zero_rank::grad_scatter : region_access {
  zero_rank& z;
  fbuffer emb, other;  // region 0 (embeddings) is held through the whole backward
  explicit grad_scatter(zero_rank& zr) : z(zr) {
    auto& p = z.part_;
    std::size_t m = 0;
    for (std::size_t i = 1; i < p.chunk.size(); ++i) m = std::max(m, p.chunk[i] * p.world);
    emb.resize(p.chunk[0] * p.world);
    other.resize(m);
  }
  float* bucket(int r) { return r == 0 ? emb.data() : other.data(); }
  float* acquire(int r) override {
    std::fill_n(bucket(r), z.part_.chunk[r] * z.part_.world, 0.0f);
    return bucket(r);
  }
  void release(int r) override {
    auto& p = z.part_;
    z.comm_.reduce_scatter(bucket(r), z.tmp_chunk_.data(), p.chunk[r]);
    kernels::accumulate(z.owned_grads_.data() + p.packed[r], z.tmp_chunk_.data(), p.chunk[r]);
  }
};

namespace detail {

class comm_moe_group final : public moe::group {
 public:
  comm_moe_group(comm::communicator& c, int ep) : c_(c), ep_(ep) {}
  int rank() const override { return c_.rank(); }
  int world() const override { return c_.world(); }
  int expert_parallel() const override { return ep_; }
  void all_gather(const float* in, float* out, std::size_t chunk) override {
    c_.all_gather(in, out, chunk);
  }
  void all_reduce(double* data, std::size_t n) override { c_.all_reduce(data, n); }
  void all_to_all(const float* in, std::span<const std::size_t> send, float* out,
                  std::span<const std::size_t> recv) override {
    c_.all_to_all(in, send, out, recv);
  }

 private:
  comm::communicator& c_;
  int ep_;
};

}  // namespace detail

void zero_rank::set_expert_parallel(int ep) {
  if (!spec_.moe.any() || comm_.world() == 1) {
    if (ep != 1)
      fail("train.expert_parallel: expected 1 for {}, got {}",
           spec_.moe.any() ? "one rank" : "a dense model (model.moe.num_experts = 0)", ep);
    return;
  }
  auto g = std::make_unique<detail::comm_moe_group>(comm_, ep);
  model_->set_moe_group(g.get());  // checks ep against the ranks and the experts
  moe_group_ = std::move(g);
}

zero_rank::zero_rank(const model_spec& m, const optimizer_config& t, int stage,
                     comm::communicator& comm)
    : spec_(m), stage_(stage), comm_(comm), part_(make_layout(m).regions, comm.world()) {
  if (stage < 0 || stage > 3) fail("zero.stage: expected 0..3, got {}", stage);
  model_ = std::make_unique<transformer>(m, stage < 3, stage < 2);
  set_expert_parallel(1);  // MoE over several ranks: routed over all of them
  const auto& layout = model_->layout();
  const int r = comm.rank();
  std::size_t max_chunk = 0;
  for (auto c : part_.chunk) max_chunk = std::max(max_chunk, c);
  if (stage == 0) {
    opt_ = std::make_unique<adamw>(layout, 0, layout.total, t);
    return;
  }
  std::vector<adamw::mapped> ranges;
  for (std::size_t i = 0; i < part_.regions.size(); ++i) {
    region o = part_.owned(r, i);
    if (o.size() == 0) continue;
    const std::size_t pk = part_.packed[i];
    ranges.push_back({o.begin, {stage == 3 ? pk : o.begin, pk, pk, o.size()}});
  }
  opt_ = std::make_unique<adamw>(layout, ranges, t);
  owned_grads_.resize(part_.owned_size);
  tmp_chunk_.resize(max_chunk);
  if (stage == 1 || stage == 3) bucket_.resize(part_.max_bucket());
  if (stage >= 2) {
    gs_ = std::make_unique<grad_scatter>(*this);
    model_->set_grad_access(gs_.get());
  }
  if (stage == 3) {
    owned_params_.resize(part_.owned_size);
    pg_ = std::make_unique<param_gather>(*this);
    model_->set_param_access(pg_.get());
  }
}

zero_rank::~zero_rank() = default;

void zero_rank::zero_grad() {
  model_->clear_moe_step();  // a new step's routing figures
  if (stage_ < 2) model_->zero_grad();
  if (stage_ >= 1) owned_grads_.zero();
}

float zero_rank::forward_backward(const int* ids, const int* targets, int b, int t,
                                  float loss_scale) {
  return model_->forward_backward(ids, targets, b, t, loss_scale);
}

float zero_rank::forward_backward(const token_batch& b, float loss_scale) {
  model_->set_route_seed(b.route_seed);
  if (b.ltd_keep <= 0 || b.ltd_keep >= b.t || ltd_layers_.empty())
    return model_->forward_backward(b.inputs.data(), b.targets.data(), b.b, b.t, loss_scale);
  token_drop drop;
  drop.layers = ltd_layers_;
  drop.keep = b.ltd_keep;
  drop.seed = b.ltd_seed;
  return model_->forward_backward(b.inputs.data(), b.targets.data(), b.b, b.t, loss_scale, &drop);
}

float zero_rank::forward(const int* ids, const int* targets, int b, int t) {
  return model_->forward(ids, targets, b, t);
}

void zero_rank::reduce_gradients() {
  if (stage_ == 0) {
    comm_.all_reduce(model_->grads().data(), model_->layout().total);
  } else if (stage_ == 1) {
    for (std::size_t i = 0; i < part_.regions.size(); ++i) {
      const region& g = part_.regions[i];
      const std::size_t padded = part_.chunk[i] * part_.world;
      std::copy_n(model_->grads().data() + g.begin, g.size(), bucket_.data());
      std::fill(bucket_.data() + g.size(), bucket_.data() + padded, 0.0f);
      comm_.reduce_scatter(bucket_.data(), owned_grads_.data() + part_.packed[i], part_.chunk[i]);
    }
  }
}

double zero_rank::grad_sq_norm() const {
  if (stage_ >= 1) return kernels::sum_squares(owned_grads_.data(), owned_grads_.size());
  double s = 0;  // stage 0: every rank holds the full sum; count only the owned ranges
  for (std::size_t i = 0; i < part_.regions.size(); ++i) {
    region o = part_.owned(comm_.rank(), i);
    s += kernels::sum_squares(model_->grads().data() + o.begin, o.size());
  }
  return s;
}

// The routing biases (moe_spec::router_bias) move by the step's loads, which every rank holds
// alike (the step is routed over the group): each updates the copy it holds, at stage 3 its
// owned share. AdamW leaves them alone (no gradient, no decay).
void zero_rank::update_router_biases() {
  const auto& layout = model_->layout();
  for (const auto& l : model_->moe_step().layers) {
    const std::size_t f = layout.router_bias(l.layer);
    const int E = int(l.counts.size());
    if (f == param_layout::none || E == 0) continue;
    if (stage_ < 3) {
      moe::update_router_bias(spec_.moe.bias_update_rate, l.counts, 0, E,
                              model_->params().data() + f);
      continue;
    }
    const std::size_t i = std::size_t(l.layer) + 1;  // the block's region
    const region o = part_.owned(comm_.rank(), i);
    const std::size_t b = std::max(f, o.begin), e = std::min(f + E, o.end);
    if (b < e)
      moe::update_router_bias(spec_.moe.bias_update_rate, l.counts, int(b - f), int(e - f),
                              owned_params_.data() + part_.packed[i] + (b - o.begin));
  }
}

void zero_rank::step(double lr, int step, float grad_scale) {
  float* params = stage_ == 3 ? owned_params_.data() : model_->params().data();
  const float* grads = stage_ == 0 ? model_->grads().data() : owned_grads_.data();
  opt_->step(params, grads, lr, step, grad_scale);
  if (spec_.moe.router_bias()) update_router_biases();
  if (stage_ == 0 || stage_ == 3) return;
  // stages 1, 2: every rank needs the updated full parameters; gather each region's chunks
  float* bucket = bucket_.size() ? bucket_.data() : gs_->emb.data();
  for (std::size_t i = 0; i < part_.regions.size(); ++i) {
    const region& g = part_.regions[i];
    region o = part_.owned(comm_.rank(), i);
    float* out = stage_ == 1 || i == 0 ? bucket : gs_->other.data();
    std::fill_n(tmp_chunk_.data(), part_.chunk[i], 0.0f);
    std::copy_n(model_->params().data() + o.begin, o.size(), tmp_chunk_.data());
    comm_.all_gather(tmp_chunk_.data(), out, part_.chunk[i]);
    std::copy_n(out, g.size(), model_->params().data() + g.begin);
  }
}

double zero_rank::all_sum(double x) {
  comm_.all_reduce(&x, 1);
  return x;
}

void zero_rank::all_sum(float* data, std::size_t n) {
  comm_.all_reduce(data, n);
}

zero_memory zero_rank::memory() const {
  const double total = double(model_->layout().total) * sizeof(float);
  const double owned = double(part_.owned_size) * sizeof(float);
  zero_memory m;
  m.param_bytes = stage_ == 3 ? owned : total;
  m.grad_bytes = stage_ == 0 ? total : stage_ == 1 ? total + owned : owned;
  m.optim_bytes = double(opt_->moments_size()) * 2 * sizeof(float);
  m.bucket_bytes = double(bucket_.size() + tmp_chunk_.size()) * sizeof(float);
  if (gs_) m.bucket_bytes += double(gs_->emb.size() + gs_->other.size()) * sizeof(float);
  return m;
}

// The rank's buffers are mutable state behind a const accessor for snapshot/export; the cast
// is confined here.
zero_rank::chunk_state zero_rank::owned_state(std::size_t i) const {
  auto& self = const_cast<zero_rank&>(*this);
  const region o = part_.owned(comm_.rank(), i);
  const std::size_t pk = part_.packed[i];
  // stage 0: full flat params and moments; 1-2: full params, packed moments; 3: all packed
  float* p = stage_ == 3 ? self.owned_params_.data() + pk : self.model_->params().data() + o.begin;
  const std::size_t mo = stage_ == 0 ? o.begin : pk;
  return {p, self.opt_->m().data() + mo, self.opt_->v().data() + mo};
}

std::vector<zero_rank::slice> zero_rank::persisted() const {
  std::vector<slice> out;
  for (std::size_t i = 0; i < part_.regions.size(); ++i) {
    region o = part_.owned(comm_.rank(), i);
    if (o.size()) out.push_back({o.begin, o.size()});
  }
  return out;
}

zero_snapshot zero_rank::snapshot() const {
  zero_snapshot s;
  s.rank = comm_.rank();
  s.slices = persisted();
  std::size_t n = 0;
  for (auto& sl : s.slices) n += sl.len;
  s.params.resize(n);
  s.exp_avg.resize(n);
  s.exp_avg_sq.resize(n);
  std::size_t at = 0;
  for (std::size_t i = 0; i < part_.regions.size(); ++i) {
    const std::size_t len = part_.owned(comm_.rank(), i).size();
    if (!len) continue;
    const chunk_state c = owned_state(i);
    std::copy_n(c.params, len, s.params.data() + at);
    std::copy_n(c.exp_avg, len, s.exp_avg.data() + at);
    std::copy_n(c.exp_avg_sq, len, s.exp_avg_sq.data() + at);
    at += len;
  }
  return s;
}

void zero_rank::load_state(const zero_state_reader& read, bool moments) {
  const std::size_t n = model_->layout().total;
  if (stage_ < 3) {  // every rank holds the full parameters (and at stage 0 the full moments)
    const bool m0 = stage_ == 0 && moments;
    read(0, n, model_->params().data(), m0 ? opt_->m().data() : nullptr,
         m0 ? opt_->v().data() : nullptr);
    if (stage_ == 0 || !moments) return;
  }
  for (std::size_t i = 0; i < part_.regions.size(); ++i) {
    const region o = part_.owned(comm_.rank(), i);
    if (!o.size()) continue;
    const chunk_state c = owned_state(i);
    read(o.begin, o.end, stage_ == 3 ? c.params : nullptr, moments ? c.exp_avg : nullptr,
         moments ? c.exp_avg_sq : nullptr);
  }
}

void zero_rank::export_state(float* params, float* m, float* v) const {
  for (std::size_t i = 0; i < part_.regions.size(); ++i) {
    const region o = part_.owned(comm_.rank(), i);
    if (!o.size()) continue;
    const chunk_state c = owned_state(i);
    std::copy_n(c.params, o.size(), params + o.begin);
    if (m) std::copy_n(c.exp_avg, o.size(), m + o.begin);
    if (v) std::copy_n(c.exp_avg_sq, o.size(), v + o.begin);
  }
}

void zero_rank::import_state(const float* params, const float* m, const float* v) {
  load_state(
      [&](std::size_t b, std::size_t e, float* p, float* em, float* ev) {
        if (p) std::copy(params + b, params + e, p);
        if (em) std::copy(m + b, m + e, em);
        if (ev) std::copy(v + b, v + e, ev);
      },
      m && v);
}

}  // namespace zf
