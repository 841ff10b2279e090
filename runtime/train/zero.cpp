#include "runtime/train/zero.hpp"

#include <algorithm>
#include <cstring>

#include "kernels/activation.hpp"
#include "kernels/adamw.hpp"
#include "kernels/device.hpp"
#include "runtime/core/device_key.hpp"
#include "runtime/core/error.hpp"

namespace zf {

device device_of(const train_config& t) {
  return device_named(t.device, "train.device");
}

// Stage 3: a region's parameters are all-gathered from the owners just before use.
struct zero_rank::param_gather : region_access {
  zero_rank& z;
  explicit param_gather(zero_rank& zr) : z(zr) {}
  float* acquire(int r) override {
    const zero_piece& p = z.part_.pieces[z.part_.first[std::size_t(r)]];  // one per region
    z.comm_.all_gather(z.owned_params_.data() + p.packed, z.bucket_.data(), p.chunk);
    return z.bucket_.data();
  }
  void release(int) override {}  // the bucket is simply reused by the next region
};

// Stages 2, 3: a region's gradients go to a zeroed bucket and are reduce-scattered into the
// owners' accumulators as soon as backward is done with the region: piece by piece, a piece that
// shares its region with others through a zero-padded copy (its padding would overlap the next
// piece in the bucket).
struct zero_rank::grad_scatter : region_access {
  zero_rank& z;
  fbuffer emb, other;  // region 0 (embeddings) is held through the whole backward
  explicit grad_scatter(zero_rank& zr) : z(zr) {
    emb.resize(z.part_.region_bucket(0));
    other.resize(z.part_.max_block_bucket());
  }
  float* bucket(int r) { return r == 0 ? emb.data() : other.data(); }
  float* acquire(int r) override {
    std::fill_n(bucket(r), z.part_.region_bucket(std::size_t(r)), 0.0f);
    return bucket(r);
  }
  void release(int r) override {
    auto& p = z.part_;
    const std::size_t i = std::size_t(r), b = p.first[i], e = p.first[i + 1];
    for (std::size_t k = b; k < e; ++k) {
      const zero_piece& piece = p.pieces[k];
      if (!p.holds(z.rank(), piece)) continue;
      const float* in = bucket(r);
      if (e - b > 1) {  // pad a copy
        float* buf = z.piece_buf_.data();
        std::copy_n(bucket(r) + (piece.range.begin - p.regions[i].begin), piece.range.size(), buf);
        std::fill(buf + piece.range.size(), buf + p.padded(piece), 0.0f);
        in = buf;
      }
      z.reduce_scatter(piece, in, z.tmp_chunk_.data());
      kernels::accumulate(z.owned_grads_.data() + piece.packed, z.tmp_chunk_.data(), piece.chunk);
    }
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
  configure(stage_ < 3 ? ep : 1);  // stage 3 shards every piece over all ranks anyway
}

zero_rank::zero_rank(const model_spec& m, const optimizer_config& t, int stage,
                     comm::communicator& comm, device where)
    : spec_(m),
      opt_config_(t),
      stage_(stage),
      where_(where),
      comm_(comm),
      part_(make_layout(m).regions, comm.world()) {
  if (stage < 0 || stage > 3) fail("zero.stage: expected 0..3, got {}", stage);
  if (where == device::cuda) {
    if (stage != 0 || comm.world() != 1)
      fail(
          "train.device = cuda: one rank at zero.stage 0 for now (got {} ranks at stage {}); "
          "ZeRO stages 1-3 and data parallelism over NCCL on GPUs are not wired yet",
          comm.world(), stage);
    kernels::gpu_init(0);  // this rank's GPU and its pool (refused here without one)
  }
  model_ = std::make_unique<transformer>(m, stage < 3, stage < 2, where);
  configure(1);
  set_expert_parallel(1);  // MoE over several ranks: routed over all of them
}

void zero_rank::configure(int slots) {
  if (opt_ && part_.slots == slots) return;  // already so
  const auto& layout = model_->layout();
  const int r = comm_.rank();
  part_ = zero_partition(layout, comm_.world(), slots);
  slot_comm_.reset();
  if (slots > 1 && comm_.world() > slots) {
    std::vector<int> replicas;
    for (int q = r % slots; q < comm_.world(); q += slots) replicas.push_back(q);
    slot_comm_ = std::make_unique<comm::subgroup>(comm_, std::move(replicas));
  }
  held_ = part_.held(r);
  model_->set_grad_access(nullptr);
  model_->set_param_access(nullptr);
  gs_.reset();
  pg_.reset();
  if (stage_ == 0) {
    std::vector<adamw::mapped> ranges;  // moments at flat offsets: other slots' pages untouched
    for (const region& h : held_)
      ranges.push_back({h.begin, {h.begin, h.begin, h.begin, h.size()}});
    opt_ = std::make_unique<adamw>(layout, ranges, opt_config_, where_);
    return;
  }
  std::vector<adamw::mapped> ranges;
  for (const auto& p : part_.pieces) {
    const region o = part_.owned(r, p);
    if (o.size() == 0) continue;
    const std::size_t pk = p.packed;
    ranges.push_back({o.begin, {stage_ == 3 ? pk : o.begin, pk, pk, o.size()}});
  }
  opt_ = std::make_unique<adamw>(layout, ranges, opt_config_);
  owned_grads_.resize(part_.owned_size);
  tmp_chunk_.resize(part_.max_chunk());
  piece_buf_.resize(stage_ == 2 ? part_.max_split_piece()
                                : 0);  // stage 2's grad_scatter pads through it
  bucket_.resize(stage_ == 1 || stage_ == 3 ? part_.max_bucket() : 0);
  if (stage_ >= 2) {
    gs_ = std::make_unique<grad_scatter>(*this);
    model_->set_grad_access(gs_.get());
  }
  if (stage_ == 3) {
    owned_params_.resize(part_.owned_size);
    pg_ = std::make_unique<param_gather>(*this);
    model_->set_param_access(pg_.get());
  }
}

void zero_rank::reduce_scatter(const zero_piece& p, const float* in, float* out) {
  if (p.slot < 0 && reduce_bf16_)
    comm_.reduce_scatter_bf16(in, out, p.chunk);
  else if (p.slot < 0)
    comm_.reduce_scatter(in, out, p.chunk);
  else if (slot_comm_ && reduce_bf16_)
    slot_comm_->reduce_scatter_bf16(in, out, p.chunk);
  else if (slot_comm_)
    slot_comm_->reduce_scatter(in, out, p.chunk);
  else if (in != out)  // the slot's one holder
    std::copy_n(in, p.chunk, out);
}

void zero_rank::all_gather(const zero_piece& p, const float* in, float* out) {
  if (p.slot < 0)
    comm_.all_gather(in, out, p.chunk);
  else if (slot_comm_)
    slot_comm_->all_gather(in, out, p.chunk);
  else if (in != out)
    std::copy_n(in, p.chunk, out);
}

// Held runs of pieces in layout order, each over its holders; every rank makes the same sequence
// of calls (a slot's piece where the others reduce theirs).
void zero_rank::all_reduce_held(float* grads) {
  const int r = comm_.rank();
  const auto& ps = part_.pieces;
  for (std::size_t k = 0; k < ps.size();) {
    if (!part_.holds(r, ps[k])) {
      ++k;
      continue;
    }
    std::size_t e = k + 1;  // adjacent pieces of every rank: one call (a dense model's whole)
    while (ps[k].slot < 0 && e < ps.size() && ps[e].slot < 0 &&
           ps[e].range.begin == ps[e - 1].range.end)
      ++e;
    const region run{ps[k].range.begin, ps[e - 1].range.end};
    float* g = grads + run.begin;
    if (ps[k].slot < 0)
      reduce_bf16_ ? comm_.all_reduce_bf16(g, run.size()) : comm_.all_reduce(g, run.size());
    else if (slot_comm_)
      reduce_bf16_ ? slot_comm_->all_reduce_bf16(g, run.size())
                   : slot_comm_->all_reduce(g, run.size());
    k = e;
  }
}

zero_rank::~zero_rank() = default;

void zero_rank::zero_grad() {
  model_->clear_moe_step();  // a new step's routing figures
  if (stage_ < 2) {
    for (const region& h : held_) {  // the held ranges only: other slots' pages stay untouched
      float* g = model_->grads().data() + h.begin;
      if (where_ == device::cuda)
        kernels::gpu_zero(g, h.size() * sizeof(float));
      else
        kernels::zero_fill(g, h.size());
    }
  }
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
    if (where_ == device::cuda) return;  // one rank (checked at construction): nothing to sum
    all_reduce_held(model_->grads().data());
  } else if (stage_ == 1) {
    for (const auto& p : part_.pieces) {
      if (!part_.holds(comm_.rank(), p)) continue;
      std::copy_n(model_->grads().data() + p.range.begin, p.range.size(), bucket_.data());
      std::fill(bucket_.data() + p.range.size(), bucket_.data() + part_.padded(p), 0.0f);
      reduce_scatter(p, bucket_.data(), owned_grads_.data() + p.packed);
    }
  }
}

double zero_rank::grad_sq_norm() const {
  const kernels::device_scope on(where_);
  if (stage_ >= 1) return kernels::sum_squares(owned_grads_.data(), owned_grads_.size());
  double s = 0;  // stage 0: every holder holds the full sum; count only the owned ranges
  for (const auto& p : part_.pieces) {
    const region o = part_.owned(comm_.rank(), p);
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
    const zero_piece& p = part_.pieces[part_.first[std::size_t(l.layer) + 1]];  // the block's
    const region o = part_.owned(comm_.rank(), p);
    const std::size_t b = std::max(f, o.begin), e = std::min(f + E, o.end);
    if (b < e)
      moe::update_router_bias(spec_.moe.bias_update_rate, l.counts, int(b - f), int(e - f),
                              owned_params_.data() + p.packed + (b - o.begin));
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
  for (const auto& p : part_.pieces) {
    if (!part_.holds(comm_.rank(), p)) continue;
    const region o = part_.owned(comm_.rank(), p);
    float* out = stage_ == 1 || p.reg == 0 ? bucket : gs_->other.data();
    std::fill_n(tmp_chunk_.data(), p.chunk, 0.0f);
    std::copy_n(model_->params().data() + o.begin, o.size(), tmp_chunk_.data());
    all_gather(p, tmp_chunk_.data(), out);
    std::copy_n(out, p.range.size(), model_->params().data() + p.range.begin);
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
  // held: the full parameters (stages 0-2) less the other expert slots', whose pages of the
  // flat buffers are never touched
  const double held = double(part_.held_size(comm_.rank())) * sizeof(float);
  const double owned = double(part_.owned_size) * sizeof(float);
  zero_memory m;
  m.param_bytes = stage_ == 3 ? owned : held;
  m.grad_bytes = stage_ == 0 ? held : stage_ == 1 ? held + owned : owned;
  m.optim_bytes = stage_ == 0 ? 2 * held : double(opt_->moments_size()) * 2 * sizeof(float);
  m.bucket_bytes = double(bucket_.size() + tmp_chunk_.size() + piece_buf_.size()) * sizeof(float);
  if (gs_) m.bucket_bytes += double(gs_->emb.size() + gs_->other.size()) * sizeof(float);
  if (slot_comm_) m.bucket_bytes += double(slot_comm_->scratch_floats()) * sizeof(float);
  return m;
}

// The rank's buffers are mutable state behind a const accessor for snapshot/export; the cast
// is confined here.
zero_rank::chunk_state zero_rank::owned_state(const zero_piece& piece) const {
  auto& self = const_cast<zero_rank&>(*this);
  const region o = part_.owned(comm_.rank(), piece);
  const std::size_t pk = piece.packed;
  // stage 0: full flat params and moments; 1-2: full params, packed moments; 3: all packed
  float* p = stage_ == 3 ? self.owned_params_.data() + pk : self.model_->params().data() + o.begin;
  const std::size_t mo = stage_ == 0 ? o.begin : pk;
  return {p, self.opt_->m().data() + mo, self.opt_->v().data() + mo};
}

std::vector<zero_rank::slice> zero_rank::persisted() const {
  std::vector<slice> out;
  for (const auto& p : part_.pieces) {
    const region o = part_.owned(comm_.rank(), p);
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
  for (const auto& p : part_.pieces) {
    const std::size_t len = part_.owned(comm_.rank(), p).size();
    if (!len) continue;
    const chunk_state c = owned_state(p);
    copy_to_host(where_, s.params.data() + at, c.params, len);
    copy_to_host(where_, s.exp_avg.data() + at, c.exp_avg, len);
    copy_to_host(where_, s.exp_avg_sq.data() + at, c.exp_avg_sq, len);
    at += len;
  }
  return s;
}

void zero_rank::load_state(const zero_state_reader& host_read, bool moments) {
  // On cuda the reader fills host memory (a checkpoint's file reads), copied up range by range.
  std::vector<float> hp, hm, hv;
  const zero_state_reader read = [&](std::size_t b, std::size_t e, float* p, float* m, float* v) {
    if (where_ == device::cpu) return host_read(b, e, p, m, v);
    for (auto* h : {&hp, &hm, &hv}) h->resize(e - b);
    host_read(b, e, p ? hp.data() : nullptr, m ? hm.data() : nullptr, v ? hv.data() : nullptr);
    if (p) copy_from_host(where_, p, hp.data(), e - b);
    if (m) copy_from_host(where_, m, hm.data(), e - b);
    if (v) copy_from_host(where_, v, hv.data(), e - b);
  };
  if (stage_ < 3) {  // the held parameters in full (and at stage 0 their moments): one read
    const bool m0 = stage_ == 0 && moments;  // per held range (one for a dense model)
    for (const region& h : held_)
      read(h.begin, h.end, model_->params().data() + h.begin,
           m0 ? opt_->m().data() + h.begin : nullptr, m0 ? opt_->v().data() + h.begin : nullptr);
    if (stage_ == 0 || !moments) return;
  }
  for (const auto& p : part_.pieces) {
    const region o = part_.owned(comm_.rank(), p);
    if (!o.size()) continue;
    const chunk_state c = owned_state(p);
    read(o.begin, o.end, stage_ == 3 ? c.params : nullptr, moments ? c.exp_avg : nullptr,
         moments ? c.exp_avg_sq : nullptr);
  }
}

void zero_rank::export_state(float* params, float* m, float* v) const {
  for (const auto& p : part_.pieces) {
    const region o = part_.owned(comm_.rank(), p);
    if (!o.size()) continue;
    const chunk_state c = owned_state(p);
    copy_to_host(where_, params + o.begin, c.params, o.size());
    if (m) copy_to_host(where_, m + o.begin, c.exp_avg, o.size());
    if (v) copy_to_host(where_, v + o.begin, c.exp_avg_sq, o.size());
  }
}

void zero_rank::import_state(const float* params, const float* m, const float* v) {
  load_state(
      [&](std::size_t b, std::size_t e, float* p, float* em, float* ev) {
        if (p) std::copy(params + b, params + e, p);  // host buffers (load_state stages them)
        if (em) std::copy(m + b, m + e, em);
        if (ev) std::copy(v + b, v + e, ev);
      },
      m && v);
}

}  // namespace zf
