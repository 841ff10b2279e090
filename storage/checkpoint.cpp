#include "storage/checkpoint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "runtime/error.hpp"
#include "storage/fs_util.hpp"
#include "storage/safetensors.hpp"

namespace fs = std::filesystem;

namespace zf::storage {
namespace {

constexpr const char* k_format = "zeroflow-checkpoint";

std::vector<st_write> tensors_of(const param_layout& L, const float* base,
                                 const std::string& prefix) {
  std::vector<st_write> w;
  for (auto& p : L.params)
    w.push_back({prefix + p.name, "F32", p.shape, base + p.offset, p.numel * sizeof(float)});
  return w;
}

std::vector<fs::path> step_dirs(const fs::path& root) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(root, ec)) {
    auto n = e.path().filename().string();
    if (e.is_directory() && n.size() > 5 && n.starts_with("step-") &&
        n.find_first_not_of("0123456789", 5) == std::string::npos)
      out.push_back(e.path());
  }
  // by step number, not by name: step-1000000 sorts after step-999999
  auto num = [](const fs::path& p) { return std::stoll(p.filename().string().substr(5)); };
  std::sort(out.begin(), out.end(), [&](auto& a, auto& b) { return num(a) < num(b); });
  return out;
}

void read_into(const safetensors_file& f, const fs::path& file, const param_info& p,
               const std::string& name, float* dst) {
  const st_tensor* t = f.find(name);
  if (!t) fail("checkpoint file {} has no tensor '{}'", file.string(), name);
  if (t->dtype != "F32" || t->shape != p.shape) {
    std::string got, want;
    for (auto d : t->shape) got += (got.empty() ? "" : ",") + std::to_string(d);
    for (auto d : p.shape) want += (want.empty() ? "" : ",") + std::to_string(d);
    fail("checkpoint file {}: tensor '{}' is {}[{}], the model expects F32[{}]", file.string(),
         name, t->dtype, got, want);
  }
  std::memcpy(dst, t->data, p.numel * sizeof(float));
}

}  // namespace

fs::path save_checkpoint(const fs::path& root, const checkpoint_view& c, int keep) {
  if (!c.layout || !c.params) fail("save_checkpoint: nothing to save");
  fs::create_directories(root);
  const std::string name = fmt::format("step-{:06d}", c.step);
  const fs::path final_dir = root / name, tmp = root / (name + ".tmp");
  if (fs::exists(final_dir))
    fail("checkpoint {} already exists; refusing to overwrite it", final_dir.string());
  fs::remove_all(tmp);  // leftovers of a crashed write are never committed data
  fs::create_directory(tmp);

  std::map<std::string, std::string> meta{{"format", k_format}, {"step", std::to_string(c.step)}};
  write_safetensors(tmp / "model.safetensors", tensors_of(*c.layout, c.params, ""), meta);
  std::vector<std::string> files{"model.safetensors"};
  if (c.exp_avg && c.exp_avg_sq) {
    auto w = tensors_of(*c.layout, c.exp_avg, "exp_avg.");
    auto w2 = tensors_of(*c.layout, c.exp_avg_sq, "exp_avg_sq.");
    w.insert(w.end(), w2.begin(), w2.end());
    write_safetensors(tmp / "optim.safetensors", w, meta);
    files.push_back("optim.safetensors");
  }
  nlohmann::json m;
  m["format"] = k_format;
  m["version"] = 1;
  m["step"] = c.step;
  m["config"] = c.config_toml;
  m["state"] = c.state;
  for (auto& f : files) {
    std::size_t size = 0;
    uint32_t crc = crc32_file(tmp / f, &size);
    m["files"][f] = {{"bytes", size}, {"crc32", crc}};
  }
  write_file_atomic(tmp / "manifest.json", m.dump(1));
  fsync_path(tmp);
  fs::rename(tmp, final_dir);
  fsync_path(root);
  write_file_atomic(root / "latest", name + "\n");

  auto dirs = step_dirs(root);
  for (std::size_t i = 0; i + keep < dirs.size(); ++i)
    if (dirs[i] != final_dir) fs::remove_all(dirs[i]);
  return final_dir;
}

fs::path resolve_checkpoint(const fs::path& dir) {
  if (fs::exists(dir / "manifest.json")) return dir;
  for (const fs::path& root : {dir, dir / "checkpoints"}) {
    if (fs::exists(root / "latest")) {
      std::string name = read_text_file(root / "latest");
      while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
      fs::path d = root / name;
      if (!fs::exists(d / "manifest.json"))
        fail("{} names {}, which has no manifest.json", (root / "latest").string(), d.string());
      return d;
    }
  }
  fail("no checkpoint at {} (expected a step folder with manifest.json, or a 'latest' file)",
       dir.string());
}

loaded_checkpoint read_manifest(const fs::path& dir_in) {
  fs::path dir = resolve_checkpoint(dir_in);
  loaded_checkpoint out;
  out.dir = dir;
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(read_text_file(dir / "manifest.json"));
    if (m.value("format", "") != k_format)
      fail("{} is not a zeroflow checkpoint manifest", (dir / "manifest.json").string());
    out.step = m.at("step").get<int>();
    out.config_toml = m.at("config").get<std::string>();
    out.state = m.value("state", nlohmann::json::object());
    if (!m.contains("files") || !m["files"].contains("model.safetensors"))
      fail("{} lists no model.safetensors", (dir / "manifest.json").string());
  } catch (const nlohmann::json::exception& e) {
    fail("corrupt checkpoint manifest {}: {}", (dir / "manifest.json").string(), e.what());
  }
  return out;
}

loaded_checkpoint load_checkpoint(const fs::path& dir_in, const param_layout& layout) {
  loaded_checkpoint out = read_manifest(dir_in);
  const fs::path dir = out.dir;
  auto m = nlohmann::json::parse(read_text_file(dir / "manifest.json"));
  // Verify every file before reading any value.
  for (auto& [f, info] : m["files"].items()) {
    if (!info.is_object() || !info.contains("bytes") || !info.contains("crc32"))
      fail("corrupt checkpoint manifest {}: entry '{}' lacks bytes/crc32",
           (dir / "manifest.json").string(), f);
    fs::path p = dir / f;
    if (!fs::exists(p)) fail("checkpoint file {} is missing", p.string());
    std::size_t size = 0;
    uint32_t crc = crc32_file(p, &size);
    if (size != info.at("bytes").get<std::size_t>())
      fail("checkpoint file {} is truncated: {} bytes, manifest says {}", p.string(), size,
           info.at("bytes").get<std::size_t>());
    if (crc != info.at("crc32").get<uint32_t>())
      fail("checkpoint file {} is corrupt: CRC-32 {:08x}, manifest says {:08x}", p.string(), crc,
           info.at("crc32").get<uint32_t>());
  }
  auto model_file = dir / "model.safetensors";
  auto f = safetensors_file::open(model_file);
  out.params.assign(layout.total, 0.0f);
  for (auto& p : layout.params) read_into(f, model_file, p, p.name, out.params.data() + p.offset);
  if (m["files"].contains("optim.safetensors")) {
    auto of = dir / "optim.safetensors";
    auto o = safetensors_file::open(of);
    out.exp_avg.assign(layout.total, 0.0f);
    out.exp_avg_sq.assign(layout.total, 0.0f);
    for (auto& p : layout.params) {
      read_into(o, of, p, "exp_avg." + p.name, out.exp_avg.data() + p.offset);
      read_into(o, of, p, "exp_avg_sq." + p.name, out.exp_avg_sq.data() + p.offset);
    }
  }
  return out;
}

}  // namespace zf::storage
