#include "pipelines/ckpt_cli.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <map>
#include <string>

#include "pipelines/pipeline.hpp"
#include "runtime/core/config.hpp"
#include "runtime/core/error.hpp"
#include "runtime/model/layout.hpp"
#include "storage/checkpoint.hpp"
#include "storage/gguf_model.hpp"
#include "storage/lm_loader.hpp"

namespace fs = std::filesystem;

namespace zf {
namespace {

struct ckpt_args {
  CLI::App *ckpt = nullptr, *info = nullptr, *verify = nullptr, *exp = nullptr, *imp = nullptr;
  std::string dir, format = "safetensors", out, file, type = "f32", data_dir;
};

ckpt_args& args() {
  static ckpt_args a;
  return a;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out;
  for (auto d : s) {
    if (!out.empty()) out += ',';
    out += std::to_string(d);
  }
  return out;
}

// " g128 asym lorc8 a8" for a quantized tensor, "" for a float one.
std::string quant_str(const storage::quant_entry& q) {
  if (q.empty()) return "";
  return fmt::format(" g{}{}{}{}", q.group, q.asym ? " asym" : "",
                     q.rank ? fmt::format(" lorc{}", q.rank) : "", q.act_int8 ? " a8" : "");
}

void cmd_info(const fs::path& dir) {
  auto m = storage::read_checkpoint_manifest(dir);
  std::size_t params = 0;
  for (auto& t : m.tensors) params += t.numel();
  std::string moments;
  for (int k : {storage::kind_exp_avg, storage::kind_exp_avg_sq})
    if (m.has_kind(k)) moments += std::string(moments.empty() ? "" : ", ") + storage::kind_name(k);
  std::cout << fmt::format("checkpoint {}\n", m.dir.string())
            << fmt::format("  format {}, step {}, written by {} writer{}, ZeRO stage {}\n",
                           m.version, m.step, m.world, m.world == 1 ? "" : "s", m.zero_stage)
            << fmt::format("  {} parameters in {} tensors; optimizer state: {}\n", params,
                           m.tensors.size(), moments.empty() ? "none" : moments);
  if (m.quantized()) {  // what each format holds, against the model in fp32
    run_config cfg;
    apply_toml(cfg, m.config_toml, (m.dir / "manifest").string());
    const std::size_t float_params = make_layout(spec_of(cfg.model)).total;
    std::map<std::string, std::pair<int, std::uint64_t>> formats;  // tensors, bytes
    std::uint64_t stored = 0;
    for (auto& t : m.tensors) {
      std::uint64_t b = 0;
      for (auto& f : t.fragments) b += f.length;
      auto& e = formats[t.quant.empty() ? "f32" : t.quant.format];
      ++e.first;
      e.second += b;
      stored += b;
    }
    std::string per;
    for (auto& [f, e] : formats)
      per += fmt::format("{}{} {} tensors {:.1f} MiB", per.empty() ? "" : ", ", f, e.first,
                         e.second / 1048576.0);
    std::cout << fmt::format(
        "  quantized: {} by {}; {}\n  model size {:.1f} MiB, {:.1f} MiB in fp32 ({:.2f}x "
        "smaller)\n",
        m.quant_scheme, m.quant_method, per, stored / 1048576.0, float_params * 4 / 1048576.0,
        double(float_params) * 4 / double(std::max<std::uint64_t>(stored, 1)));
  }
  std::uint64_t total = 0;
  std::cout << fmt::format("  files ({}):\n", m.files.size());
  for (auto& [name, bytes] : m.files) {
    std::cout << fmt::format("    {:<16} {:>14} bytes\n", name, bytes);
    total += bytes;
  }
  std::cout << fmt::format("    {:<16} {:>14} bytes\n", "total", total);
  std::cout << "  tensors:\n";
  std::size_t w = 0, ws = 0;
  for (auto& t : m.tensors) {
    w = std::max(w, t.name.size());
    ws = std::max(ws, t.dtype.size() + shape_str(t.shape).size() + 2 + quant_str(t.quant).size());
  }
  for (auto& t : m.tensors) {
    std::map<int, int> per_kind;
    std::map<std::string, int> files;
    for (auto& f : t.fragments) {
      ++per_kind[f.kind];
      ++files[f.file];
    }
    std::string frag, in;
    for (auto& [k, n] : per_kind)
      frag += fmt::format("{}{} {}", frag.empty() ? "" : ", ", storage::kind_name(k), n);
    for (auto& [f, n] : files) in += fmt::format("{}{}", in.empty() ? "" : " ", f);
    std::cout << fmt::format("    {:<{}}  {:<{}}  fragments: {}  in {}\n", t.name, w,
                             t.dtype + "[" + shape_str(t.shape) + "]" + quant_str(t.quant), ws,
                             frag.empty() ? "none" : frag, in);
  }
}

void cmd_verify(const fs::path& dir) {
  auto r = storage::verify_checkpoint(dir);
  if (!r.ok) {
    std::string msg = fmt::format("ckpt verify {}: {} problem{}", dir.string(), r.problems.size(),
                                  r.problems.size() == 1 ? "" : "s");
    for (auto& p : r.problems) msg += "\n  " + p;
    throw error(msg);
  }
  std::cout << fmt::format("ok: {} (step {}): {} data bytes, every fragment's CRC-32 matches\n",
                           storage::resolve_checkpoint(dir).string(), r.step, r.bytes);
}

}  // namespace

void add_ckpt_subcommand(CLI::App& app) {
  auto& a = args();
  a.ckpt = app.add_subcommand("ckpt", "inspect, verify, export or import checkpoints");
  a.ckpt->require_subcommand(1);
  a.info = a.ckpt->add_subcommand("info", "step, world/stage written with, tensors, files");
  a.info->add_option("DIR", a.dir, "step folder, checkpoints/ root or run folder")->required();
  a.verify = a.ckpt->add_subcommand("verify", "check every file, size and fragment checksum");
  a.verify->add_option("DIR", a.dir, "step folder, checkpoints/ root or run folder")->required();
  a.exp = a.ckpt->add_subcommand(
      "export",
      "write the weights as Hugging Face safetensors (+ config.json beside) or as a GGUF file "
      "llama.cpp reads (GPT-2 or Llama, the tokenizer inside)");
  a.exp->add_option("DIR", a.dir, "step folder, checkpoints/ root or run folder")->required();
  a.exp->add_option("--format", a.format, "output format")
      ->check(CLI::IsMember({"safetensors", "gguf"}))
      ->capture_default_str();
  a.exp->add_option("--type", a.type, "gguf: the matrices' format")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0"}))
      ->capture_default_str();
  a.exp->add_option("--data-dir", a.data_dir, "gguf: folder with the gpt2/ tokenizer files");
  a.exp->add_option("--out", a.out, "file to write (not overwritten)")->required();
  a.imp = a.ckpt->add_subcommand(
      "import", "Hugging Face GPT-2 safetensors + config.json -> a step-0 checkpoint (weights)");
  a.imp->add_option("FILE", a.file, "safetensors file; config.json must sit beside it")->required();
  a.imp->add_option("--out", a.out, "checkpoints root to create")->required();
}

bool run_ckpt_subcommand() {
  auto& a = args();
  if (!a.ckpt || !*a.ckpt) return false;
  if (*a.info) {
    cmd_info(a.dir);
  } else if (*a.verify) {
    cmd_verify(a.dir);
  } else if (*a.exp && a.format == "gguf") {
    auto [w, cfg] = storage::load_checkpoint_model(a.dir);
    if (!a.data_dir.empty()) cfg.data.data_dir = a.data_dir;
    kernels::ggml_format f{};
    kernels::parse_ggml_format(a.type, f);
    storage::write_gguf_model(w, open_tokenizer(cfg).first, a.out, f);
    std::cout << fmt::format("exported {} -> {} ({})\n",
                             storage::resolve_checkpoint(a.dir).string(), a.out, a.type);
  } else if (*a.exp) {
    auto cj = storage::export_safetensors(a.dir, a.out);
    std::cout << fmt::format("exported {} -> {} (+ {})\n",
                             storage::resolve_checkpoint(a.dir).string(), a.out, cj.string());
  } else if (*a.imp) {
    auto d = storage::import_safetensors(a.file, a.out);
    std::cout << fmt::format("imported {} -> {}\n", a.file, d.string());
  }
  return true;
}

}  // namespace zf
