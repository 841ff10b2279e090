// The model on the cuda device (model.hpp, "Device"): its parameters, gradients, activations and
// optimizer state in GPU memory, every kernel a cuda twin. Each check runs on the CPU simulation
// of CUDA (kernels/dispatch.hpp: cuda_simulation_scope), which every build has, and on a GPU where
// there is one (scripts/gpu-check; elsewhere one SKIPPED line), against the cpu model on the same
// weights and batch: the twins compute in other orders (tiled attention, the
// simulated cuBLASLt), so numbers agree within stated bounds, not bitwise. The simulation fills
// fresh GPU memory with NaN, so a buffer the model forgets to clear shows up as a NaN here.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/adamw.hpp"
#include "kernels/device.hpp"
#include "kernels/dispatch.hpp"
#include "kernels/gemm_lib.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/kv_storage.hpp"
#include "runtime/model/lm_weights.hpp"
#include "runtime/model/model.hpp"
#include "runtime/model/model_paged.hpp"
#include "runtime/serve/engine_core.hpp"
#include "runtime/text/tokenizer.hpp"
#include "runtime/train/optim.hpp"

namespace {

namespace k = zf::kernels;

zf::model_config small(const char* arch) {
  zf::model_config m;
  m.arch = arch;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 32;
  m.n_positions = 32;
  m.vocab_size = 97;
  if (m.arch == "llama") {
    m.n_kv_head = 2;  // grouped-query attention
    m.attn_bias = true;
  }
  return m;
}

struct batch {
  int b = 2, t = 12;
  std::vector<int> ids, targets;
  explicit batch(int vocab, unsigned seed) {
    std::mt19937 rng(seed);
    ids.resize(std::size_t(b) * t);
    targets.resize(ids.size());
    for (auto& x : ids) x = int(rng() % unsigned(vocab));
    for (auto& x : targets) x = int(rng() % unsigned(vocab));
    targets[3] = -1;  // an ignored row
  }
};

// ||a - b|| / ||b|| over the flat buffers (and whether a has no NaN).
double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) return INFINITY;
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(d / n);
}

std::vector<float> host_grads(const zf::transformer& m) {
  std::vector<float> g(m.layout().total);
  m.read_grads(g.data());
  return g;
}

std::vector<float> host_params(const zf::transformer& m) {
  std::vector<float> p(m.layout().total);
  m.read_params(p.data());
  return p;
}

// Bounds: fp32 twins differ from the cpu kernels by reassociation only; bf16 / fp16 operands can
// round to neighbouring values where the fp32 inputs differ in their last bits.
struct bounds {
  double loss, grads;
};
bounds bounds_of(k::precision p) {
  return p == k::precision::f32 ? bounds{1e-5, 1e-5} : bounds{2e-3, 1e-2};
}

// body() on the simulated cuda device, then on a GPU where this process has one.
template <class F>
void on_each_cuda(const char* what, F&& body) {
  {
    INFO("simulated cuda");
    const k::cuda_simulation_scope sim;
    k::gpu_init(0);
    body();
  }
  if (!k::cuda_built() || k::cuda_device_count() == 0) {
    const std::string why = k::cuda_built() ? "no CUDA device visible" : "built without CUDA";
    MESSAGE("SKIPPED " << std::string(what) << " on a GPU: " << why
                       << " (checked in the simulation only)");
    return;
  }
  INFO("on the GPU");
  const k::cuda_simulation_scope real(false);
  k::gpu_init(0);
  body();
}

}  // namespace

TEST_CASE("model on cuda: forward_backward equals the cpu model (gpt2, llama)") {
  on_each_cuda("the model's forward_backward", [] {
    for (const char* arch : {"gpt2", "llama"}) {
      for (const auto p : {k::precision::f32, k::precision::bf16, k::precision::f16}) {
        const std::string arch_name = arch;
        CAPTURE(arch_name);
        CAPTURE(int(p));
        const auto cfg = small(arch);
        zf::transformer cpu(cfg), gpu(cfg, true, true, zf::device::cuda);
        CHECK(gpu.where() == zf::device::cuda);
        cpu.init_weights(11);
        gpu.init_weights(11);
        CHECK(host_params(gpu) == host_params(cpu));  // drawn on the host: the same bits
        cpu.set_precision(p);
        gpu.set_precision(p);
        const batch x(cfg.vocab_size, 5);
        const bounds tol = bounds_of(p);
        // Twice: the second call accumulates into the gradients and reuses every buffer.
        for (int pass = 0; pass < 2; ++pass) {
          const float lc = cpu.forward_backward(x.ids.data(), x.targets.data(), x.b, x.t);
          const float lg = gpu.forward_backward(x.ids.data(), x.targets.data(), x.b, x.t);
          CHECK(lc > 4.0f);  // ~log(97): a real loss from fresh weights
          CHECK(std::abs(lg - lc) <= tol.loss * lc);
        }
        const auto gc = host_grads(cpu), gg = host_grads(gpu);
        CHECK(rel_error(gg, gc) < tol.grads);
        std::size_t nonzero = 0;
        for (float v : gg) nonzero += v != 0.0f;
        CHECK(nonzero > gg.size() / 2);
        // An evaluation forward (no backward) and zero_grad on the device.
        const float ec = cpu.forward(x.ids.data(), x.targets.data(), x.b, x.t);
        const float eg = gpu.forward(x.ids.data(), x.targets.data(), x.b, x.t);
        CHECK(std::abs(eg - ec) <= tol.loss * ec);
        gpu.zero_grad();
        for (float v : host_grads(gpu)) REQUIRE(v == 0.0f);
      }
    }
  });
}

TEST_CASE("model on cuda: five AdamW steps with clipping follow the cpu run") {
  on_each_cuda("the model's AdamW steps", [] {
    const auto cfg = small("gpt2");
    zf::optimizer_config o;
    o.lr = 3e-3;
    o.grad_clip = 0.5;  // small enough to clip: the norm comes from sum_squares on the device
    zf::transformer cpu(cfg), gpu(cfg, true, true, zf::device::cuda);
    cpu.init_weights(3);
    gpu.init_weights(3);
    const auto& L = cpu.layout();
    zf::adamw oc(L, 0, L.total, o), og(L, 0, L.total, o, zf::device::cuda);
    const batch x(cfg.vocab_size, 9);
    std::vector<float> lc, lg;
    std::uint64_t used_after_first = 0;
    for (int s = 1; s <= 5; ++s) {
      for (auto* m : {&cpu, &gpu}) {
        m->zero_grad();
        const float loss = m->forward_backward(x.ids.data(), x.targets.data(), x.b, x.t);
        (m == &cpu ? lc : lg).push_back(loss);
        double sq = 0;
        {
          const k::device_scope on(m->where());
          sq = k::sum_squares(m->grads().data(), m->grads().size());
        }
        const float clip = zf::clip_coefficient(std::sqrt(sq), o.grad_clip);
        if (s == 1) CHECK(clip < 1.0f);
        (m == &cpu ? oc : og).step(m->params().data(), m->grads().data(), o.lr, s, clip);
      }
      k::gpu_synchronize();  // the pool's counters move as the stream reaches each free
      if (s == 1) used_after_first = k::gpu_memory().used;
    }
    // Steady state: later steps took nothing more from the pool than the first kept.
    CHECK(k::gpu_memory().used == used_after_first);
    for (int s = 0; s < 5; ++s) {
      CAPTURE(s);
      CHECK(std::abs(lg[std::size_t(s)] - lc[std::size_t(s)]) <= 1e-4 * lc[std::size_t(s)]);
    }
    CHECK(lc.back() < lc.front() - 0.05f);  // it learns (the same batch five times)
    CHECK(rel_error(host_params(gpu), host_params(cpu)) < 1e-5);
  });
}

TEST_CASE("model on cuda: modes that do not run there yet are refused by name") {
  const k::cuda_simulation_scope sim;
  k::gpu_init(0);
  const auto cfg = small("gpt2");
  zf::transformer gpu(cfg, true, true, zf::device::cuda);
  gpu.init_weights(1);
  const batch x(cfg.vocab_size, 2);
  std::vector<float> out(x.ids.size());
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const zf::error& e) {
      return e.what();
    }
    return "(no error)";
  };
  CHECK(message([&] {
          gpu.score(x.ids.data(), x.targets.data(), x.b, x.t, out.data());
        }).find("score mode does not run on the cuda device yet") != std::string::npos);
  CHECK(message([&] {
          gpu.forward_rl(x.ids.data(), x.targets.data(), x.b, x.t, out.data(), nullptr, nullptr);
        }).find("RL mode") != std::string::npos);
  auto moe = small("gpt2");
  moe.moe.num_experts = 4;
  CHECK(message([&] {
          zf::transformer m(moe, true, true, zf::device::cuda);
        }).find("MoE models do not run on the cuda device") != std::string::npos);
  // Bad ids are still caught on the host before anything is copied up.
  auto bad = x.ids;
  bad[0] = cfg.vocab_size;
  CHECK(message([&] {
          gpu.forward_backward(bad.data(), x.targets.data(), x.b, x.t);
        }).find("token id 97 out of range") != std::string::npos);
}

TEST_CASE("model on cuda: refused without a GPU unless CUDA is simulated") {
  const k::cuda_simulation_scope real(false);
  if (k::cuda_built() && k::cuda_device_count() > 0) {
    MESSAGE("SKIPPED the refusal check: this process has a GPU");
    return;
  }
  std::string m;
  try {
    zf::transformer gpu(small("gpt2"), true, true, zf::device::cuda);
  } catch (const k::kernel_error& e) {
    m = e.what();
  }
  CHECK(m.find(k::cuda_built() ? "no CUDA device" : "built without CUDA") != std::string::npos);
}

TEST_CASE("paged model on cuda: ragged prefill and decode batches equal the cpu paged model") {
  on_each_cuda("the paged model", [] {
    for (const char* arch : {"gpt2", "llama"}) {
      for (const auto kvt : {zf::kv_dtype::fp32, zf::kv_dtype::bf16}) {
        const std::string arch_name = arch, kv_name = zf::kv_dtype_name(kvt);
        CAPTURE(arch_name);
        CAPTURE(kv_name);
        const auto cfg = small(arch);
        zf::transformer init(cfg, true, false);
        init.init_weights(4);
        const zf::model_spec& spec = init.spec();
        const auto wc = zf::copy_lm_weights(spec, init.params().data());
        const auto wg = zf::copy_lm_weights(spec, init.params().data(), zf::device::cuda);
        const int bs = 8, blocks = 6, KV = spec.kv_dim();
        zf::kv_storage kc(spec.n_layer, blocks, bs, KV, kvt),
            kg(spec.n_layer, blocks, bs, KV, kvt, zf::device::cuda);
        zf::paged_model pc(wc, 16, 4), pg(wg, 16, 4, 1, zf::device::cuda);
        // Two sequences over scrambled blocks: A prefills 10 tokens at once, B 7 in two chunks
        // riding along; then both decode together.
        const std::vector<int> ta = {3, 0}, tb = {5, 1};
        std::vector<int> a(12), b(9);
        for (std::size_t i = 0; i < a.size(); ++i) a[i] = int(i * 7 + 1) % cfg.vocab_size;
        for (std::size_t i = 0; i < b.size(); ++i) b[i] = int(i * 11 + 2) % cfg.vocab_size;
        const std::vector<std::vector<zf::lm_chunk>> steps = {
            {{a.data(), 0, 10, ta.data(), true}, {b.data(), 0, 4, tb.data(), false}},
            {{b.data() + 4, 4, 3, tb.data(), true}},
            {{a.data() + 10, 10, 1, ta.data(), true}, {b.data() + 7, 7, 1, tb.data(), true}},
            {{a.data() + 11, 11, 1, ta.data(), true}, {b.data() + 8, 8, 1, tb.data(), true}}};
        for (std::size_t st = 0; st < steps.size(); ++st) {
          CAPTURE(st);
          pc.forward(steps[st], kc);
          pg.forward(steps[st], kg);
          int j = 0;
          for (const auto& ch : steps[st]) {
            if (!ch.logits) continue;
            const float* lc = pc.logits(j);
            const float* lg = pg.logits(j++);  // host memory on both devices
            std::vector<float> vc(lc, lc + cfg.vocab_size), vg(lg, lg + cfg.vocab_size);
            CHECK(rel_error(vg, vc) < 1e-4);  // reassociation only: a wrong row is O(1)
          }
        }
      }
    }
  });
}

namespace {

// Greedy completions of three prompts served together (ragged prefill chunks riding with decodes,
// prefix caching on: two prompts share their first block; the third asks for two choices, which
// share its partly filled last block until each copies it on its first write) by an engine on
// `where`: token ids per choice.
std::vector<std::vector<int>> serve_greedy(std::shared_ptr<const zf::lm_weights> w,
                                           zf::device where) {
  static const zf::tokenizer tok = zf::tokenizer::load_gpt2(ZF_DATA_DIR "/gpt2");
  zf::engine_core_options o;
  o.sched.token_budget = 24;  // below the prompts' sum: prefills split over steps
  o.sched.max_seqs = 4;
  o.sched.block_size = 4;
  o.sched.prefix_caching = true;
  o.where = where;
  zf::engine_core core(std::move(w), tok, o);
  const std::vector<std::vector<int>> prompts = {
      {5, 9, 13, 2, 7, 1, 3, 8, 4, 6, 11}, {5, 9, 13, 2, 40, 41}, {60, 61, 62, 63, 64, 65, 66, 67, 68, 69}};
  std::vector<std::vector<int>> out(2 * prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    zf::serve::completion_request r;
    r.prompt = prompts[i];
    r.max_tokens = 6;
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    r.n = i == 2 ? 2 : 1;
    auto sink = [&out, i](const zf::serve::completion_event& e) {
      auto& o = out[2 * i + std::size_t(e.index)];
      o.insert(o.end(), e.tokens.begin(), e.tokens.end());
    };
    REQUIRE(core.submit(i + 1, r, sink, zf::engine_core::clock::now()).status == 200);
  }
  for (int guard = 0; guard < 200 && core.step(); ++guard) {
  }
  return out;
}

}  // namespace

TEST_CASE("engine on cuda: greedy completions equal the cpu engine's, KV pool on the device") {
  on_each_cuda("the engine", [] {
    const auto cfg = small("gpt2");
    zf::transformer init(cfg, true, false);
    init.init_weights(6);
    // Sharpened (weights x 8): attention that tells its keys apart, so a K/V row missing from
    // the device's pool changes the tokens.
    std::vector<float> flat(init.params().data(), init.params().data() + init.params().size());
    for (float& x : flat) x *= 8.0f;
    auto w = std::make_shared<const zf::lm_weights>(zf::copy_lm_weights(init.spec(), flat.data()));
    const auto cpu = serve_greedy(w, zf::device::cpu);
    const auto gpu = serve_greedy(w, zf::device::cuda);  // fp32 weights copied up by the engine
    for (std::size_t i = 0; i < cpu.size(); ++i) {
      CAPTURE(i);
      CHECK(cpu[i].size() == (i % 2 == 0 || i == 5 ? 6u : 0u));  // choice 1 of the third only
      CHECK(gpu[i] == cpu[i]);
    }
  });
}
