// Writing checkpoints: data files (io_uring, CRC computed while copying), the manifest, and the
// commit point (storage/checkpoint.hpp has the format; reading and verifying are checkpoint.cpp).
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <unordered_map>

#include "manifest.capnp.h"
#include "runtime/core/error.hpp"
#include "storage/checkpoint.hpp"
#include "storage/checkpoint_format.hpp"
#include "storage/fault_inject.hpp"
#include "storage/fs_util.hpp"
#include "storage/quant_checkpoint.hpp"
#include "storage/uring_file.hpp"

namespace fs = std::filesystem;

namespace zf::storage {
using namespace detail;
namespace detail {

bool is_step_dir_name(const std::string& n) {
  return n.size() > 5 && n.size() < 24 && n.starts_with("step-") &&
         n.find_first_not_of("0123456789", 5) == std::string::npos;
}

std::vector<fs::path> step_dirs(const fs::path& root) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && is_step_dir_name(e.path().filename().string())) out.push_back(e.path());
  // by step number, not by name: step-1000000 sorts after step-999999
  auto num = [](const fs::path& p) { return std::stoll(p.filename().string().substr(5)); };
  std::sort(out.begin(), out.end(), [&](auto& a, auto& b) { return num(a) < num(b); });
  return out;
}

}  // namespace detail

namespace {

constexpr std::size_t k_piece = 256u << 10;  // copy + CRC granularity (stays in L2)

// Removes the oldest step folders beyond keep (never `newest`). Each is renamed to step-X.del
// first, so a crash mid-removal leaves no half-deleted step-X; .del leftovers go here too.
void prune(const fs::path& root, const fs::path& newest, int keep) {
  auto dirs = step_dirs(root);
  const std::size_t k = static_cast<std::size_t>(std::max(keep, 0));
  std::error_code ec;
  for (std::size_t i = 0; i + k < dirs.size(); ++i) {
    if (dirs[i] == newest) continue;
    fs::path del = dirs[i];
    del += ".del";
    fs::remove_all(del, ec);
    ec = io_fault_ec();
    if (!ec) fs::rename(dirs[i], del, ec);
    if (ec) fail("cannot prune checkpoint {}: {}", dirs[i].string(), ec.message());
  }
  for (auto& e : fs::directory_iterator(root, ec)) {
    const auto n = e.path().filename().string();
    if (e.is_directory() && n.size() > 4 && n.ends_with(".del") &&
        is_step_dir_name(n.substr(0, n.size() - 4)))
      fs::remove_all(e.path(), ec);
  }
}

// Folds the bytes at file offsets [a, a + len) (now in memory at d) into the CRCs of the
// fragments they belong to; `out` is in file order and fi the fragment the bytes start in.
void crc_pieces(std::vector<fragment>& out, std::size_t& fi, uint64_t a, const std::byte* d,
                std::size_t len) {
  const uint64_t e = a + len;
  while (a < e && fi < out.size()) {
    fragment& f = out[fi];
    if (a >= f.offset + f.length) {
      ++fi;
      continue;
    }
    if (a < f.offset) {  // padding, or bytes between tensors (a layout with holes): no fragment's
      const uint64_t gap = std::min(e, f.offset) - a;
      a += gap;
      d += gap;
      continue;
    }
    const uint64_t take = std::min(e, f.offset + f.length) - a;
    f.crc32 = crc32_of(d, static_cast<std::size_t>(take), f.crc32);
    a += take;
    d += take;
  }
}

::Manifest::Kind to_capnp(int kind) {
  static constexpr ::Manifest::Kind kinds[k_kinds] = {
      ::Manifest::Kind::PARAM,  ::Manifest::Kind::EXP_AVG, ::Manifest::Kind::EXP_AVG_SQ,
      ::Manifest::Kind::QDATA,  ::Manifest::Kind::QSCALES, ::Manifest::Kind::QZEROS,
      ::Manifest::Kind::LORC_A, ::Manifest::Kind::LORC_B};
  if (kind < 0 || kind >= k_kinds) fail("fragment kind {} is unknown", kind);
  return kinds[kind];
}

// The fragment dtypes a manifest can name (storage/manifest.capnp Dtype).
::Manifest::Dtype to_capnp(dtype t) {
  switch (t) {
    case dtype::f32:
      return ::Manifest::Dtype::F32;
    case dtype::bf16:
      return ::Manifest::Dtype::BF16;
    case dtype::f16:
      return ::Manifest::Dtype::F16;
    case dtype::u8:
      return ::Manifest::Dtype::U8;
    default:
      break;
  }
  fail("a checkpoint fragment cannot be stored as {} (f32, bf16, f16 or u8)", dtype_name(t));
}

// One tensor as the manifest lists it: a float tensor of the layout, or a quantized one.
struct listed {
  const std::string* name;
  const std::vector<int64_t>* shape;
  const quant_entry* quant;  // null for a float tensor
};

// The layout's tensors in order, each quantized one in place of its float form, then the
// quantized tensors the layout does not have (a tied model's quantized head).
std::vector<listed> listed_tensors(const param_layout& L, const manifest_info& info) {
  std::map<std::string, const quant_tensor*> q;
  for (auto& t : info.quant) q[t.name] = &t;
  std::vector<listed> out;
  for (auto& p : L.params) {
    auto it = q.find(p.name);
    if (it == q.end()) {
      out.push_back({&p.name, &p.shape, nullptr});
    } else {
      if (it->second->shape != p.shape)
        fail("commit_checkpoint: quantized '{}' has shape [{}], the layout's is [{}]", p.name,
             shape_str(it->second->shape), shape_str(p.shape));
      out.push_back({&p.name, &p.shape, &it->second->quant});
      q.erase(it);
    }
  }
  for (auto& t : info.quant)
    if (q.count(t.name)) out.push_back({&t.name, &t.shape, &t.quant});
  return out;
}

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string encode_manifest(const std::vector<listed>& tensors, const manifest_info& info,
                            const std::map<std::string, uint64_t>& files,
                            std::unordered_map<std::string, std::vector<const fragment*>>& by) {
  capnp::MallocMessageBuilder body;
  auto m = body.initRoot<::Manifest>();
  m.setStep(info.step);
  m.setWorld(info.world);
  m.setZeroStage(info.zero_stage);
  m.setConfigToml(info.config_toml);
  m.setStateJson(info.state.dump());
  m.setQuantScheme(info.quant_scheme);
  m.setQuantMethod(info.quant_method);
  auto fl = m.initFiles(static_cast<unsigned>(files.size()));
  unsigned i = 0;
  for (auto& [name, bytes] : files) {
    fl[i].setName(name);
    fl[i].setBytes(bytes);
    ++i;
  }
  auto tl = m.initTensors(static_cast<unsigned>(tensors.size()));
  i = 0;
  for (auto& e : tensors) {
    auto t = tl[i++];
    t.setName(*e.name);
    t.setDtype(e.quant ? upper(e.quant->format) : "F32");
    auto sh = t.initShape(static_cast<unsigned>(e.shape->size()));
    for (unsigned d = 0; d < e.shape->size(); ++d) sh.set(d, (*e.shape)[d]);
    if (e.quant) {
      auto q = t.initQuant();
      q.setFormat(e.quant->format);
      q.setK(e.quant->k);
      q.setN(e.quant->n);
      q.setGroup(e.quant->group);
      q.setAsym(e.quant->asym);
      q.setActInt8(e.quant->act_int8);
      q.setRank(e.quant->rank);
    }
    auto& fr = by[*e.name];
    auto fb = t.initFragments(static_cast<unsigned>(fr.size()));
    for (unsigned j = 0; j < fr.size(); ++j) {
      fb[j].setKind(to_capnp(fr[j]->kind));
      fb[j].setFile(fr[j]->file);
      fb[j].setOffset(fr[j]->offset);
      fb[j].setLength(fr[j]->length);
      fb[j].setElemBegin(fr[j]->elem_begin);
      fb[j].setCrc32(fr[j]->crc32);
      fb[j].setDtype(to_capnp(fr[j]->dtype));
    }
  }
  auto bw = capnp::messageToFlatArray(body);
  auto bb = bw.asBytes();
  return wrap_manifest_body(std::string_view(reinterpret_cast<const char*>(bb.begin()), bb.size()));
}

}  // namespace

std::string wrap_manifest_body(std::string_view body) {
  capnp::MallocMessageBuilder outer;
  auto r = outer.initRoot<::ManifestFile>();
  r.setMagic(k_magic);
  r.setVersion(k_checkpoint_version);
  r.setCrc32(crc32_of(body.data(), body.size()));
  r.setBody(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(body.data()), body.size()));
  auto ow = capnp::messageToFlatArray(outer);
  auto ob = ow.asBytes();
  return std::string(reinterpret_cast<const char*>(ob.begin()), ob.size());
}

std::string manifest_body(std::string_view file) {
  if (file.size() % sizeof(capnp::word))
    fail("manifest_body: {} bytes is not whole words", file.size());
  auto words = kj::heapArray<capnp::word>(file.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), file.data(), file.size());
  capnp::FlatArrayMessageReader r(words);
  auto body = r.getRoot<::ManifestFile>().getBody();
  return std::string(reinterpret_cast<const char*>(body.begin()), body.size());
}

fs::path checkpoint_tmp_dir(const fs::path& root, int step) {
  return root / (step_name(step) + ".tmp");
}

fs::path begin_checkpoint(const fs::path& root, int step) {
  if (step < 0) fail("begin_checkpoint: step {} is negative", step);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) fail("cannot create checkpoint folder {}: {}", root.string(), ec.message());
  const fs::path tmp = checkpoint_tmp_dir(root, step);
  fs::remove_all(tmp, ec);  // leftovers of a crashed write are never committed data
  if (ec) fail("cannot remove the leftover {}: {}", tmp.string(), ec.message());
  ec = io_fault_ec();
  if (!ec) fs::create_directory(tmp, ec);
  if (ec) fail("cannot create {}: {}", tmp.string(), ec.message());
  return tmp;
}

void abandon_checkpoint(const fs::path& tmp_dir) noexcept {
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
}

std::vector<fragment> write_shard(const fs::path& tmp_dir, int rank, const param_layout& L,
                                  const shard_data& s, const write_options& o) {
  return write_shard(tmp_dir, rank, L, std::vector<shard_data>{s}, o);
}

std::vector<fragment> write_shard(const fs::path& tmp_dir, int rank, const param_layout& L,
                                  const std::vector<shard_data>& slices, const write_options& o) {
  if (rank < 0) fail("write_shard: rank {} is negative", rank);
  struct section {  // one kind of one slice, at a 4 KiB-aligned offset of the file
    int kind;
    const float* src;
    std::size_t begin, end;  // flat range
    uint64_t base;           // byte offset in the file
  };
  std::vector<const shard_data*> ss;
  for (auto& s : slices) {
    check_range(L, s.begin, s.end, "write_shard");
    if (s.end == s.begin) continue;
    if (!s.params) fail("write_shard: rank {} passed no parameters", rank);
    ss.push_back(&s);
  }
  if (ss.empty()) return {};
  auto src_of = [](const shard_data& s, int k) {
    return k == kind_param ? s.params : k == kind_exp_avg ? s.exp_avg : s.exp_avg_sq;
  };
  std::vector<section> secs;
  uint64_t at = 0;
  for (int k = 0; k < 3; ++k) {
    if (!src_of(*ss[0], k)) continue;
    for (auto* s : ss) {
      if (!src_of(*s, k))
        fail("write_shard: rank {}: some slices have {} and some do not", rank, kind_name(k));
      secs.push_back({k, src_of(*s, k), s->begin, s->end, at});
      at += round_up((s->end - s->begin) * sizeof(float), k_page);
    }
  }
  const std::string file = rank_file(rank);

  std::vector<fragment> out;  // in file order: sections, then tensors in flat order
  for (auto& sec : secs)
    for (auto& p : L.params) {  // the layout is in flat order
      if (!p.numel || p.offset >= sec.end || p.offset + p.numel <= sec.begin) continue;
      const std::size_t lo = std::max(sec.begin, p.offset),
                        hi = std::min(sec.end, p.offset + p.numel);
      out.push_back({p.name, sec.kind, file, sec.base + (lo - sec.begin) * sizeof(float),
                     (hi - lo) * sizeof(float), lo - p.offset, 0, dtype::f32});
    }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.offset < b.offset; });

  uring_writer w(tmp_dir / file, {o.chunk_bytes, o.queue_depth, o.direct});
  const std::size_t chunk = w.chunk_bytes();
  std::size_t fi = 0;  // the fragment the next byte belongs to
  for (std::size_t k = 0; k < secs.size(); ++k) {
    const auto* src = reinterpret_cast<const std::byte*>(secs[k].src);
    const uint64_t base = secs[k].base, bytes = (secs[k].end - secs[k].begin) * sizeof(float);
    for (uint64_t pos = 0; pos < bytes; pos += chunk) {
      const std::size_t m = static_cast<std::size_t>(std::min<uint64_t>(chunk, bytes - pos));
      std::byte* buf = w.acquire();
      for (std::size_t q = 0; q < m; q += k_piece) {  // copy, then CRC while it is in cache
        const std::size_t len = std::min(k_piece, m - q);
        std::memcpy(buf + q, src + pos + q, len);
        crc_pieces(out, fi, base + pos + q, buf + q, len);
      }
      std::size_t wlen = m;
      if (k + 1 < secs.size() && m % k_page) {  // pad to the next section's aligned start
        const std::size_t pad = static_cast<std::size_t>(round_up(m, k_page)) - m;
        std::memset(buf + m, 0, pad);
        wlen += pad;
      }
      w.submit(buf, wlen, base + pos);
    }
  }
  w.finish();
  return out;
}

namespace {
void check_tmp_dir(const fs::path& root, const fs::path& tmp_dir, int step) {
  const std::string name = step_name(step);
  if (tmp_dir.filename() != name + ".tmp")
    fail("commit_checkpoint: {} is not the folder of step {} ({}.tmp)", tmp_dir.string(), step,
         name);
  std::error_code ec;
  if (!fs::is_directory(tmp_dir) || !fs::equivalent(tmp_dir.parent_path(), root, ec))
    fail("commit_checkpoint: {} is not a folder in {}", tmp_dir.string(), root.string());
}
}  // namespace

void write_manifest(const fs::path& root, const fs::path& tmp_dir, const param_layout& L,
                    const std::vector<fragment>& all, const manifest_info& info) {
  check_tmp_dir(root, tmp_dir, info.step);
  std::error_code ec;
  const std::vector<listed> tensors = listed_tensors(L, info);
  std::unordered_map<std::string, const listed*> known;
  for (auto& t : tensors) known[*t.name] = &t;

  std::unordered_map<std::string, std::vector<const fragment*>> by;
  std::map<std::string, uint64_t> files;
  bool present[3] = {false, false, false};
  for (auto& f : all) {
    auto it = known.find(f.tensor);
    if (it == known.end())
      fail("commit_checkpoint: {} has a fragment of '{}', which the layout does not have", f.file,
           f.tensor);
    if (f.kind < 0 || f.kind >= k_kinds)
      fail("commit_checkpoint: fragment kind {} is unknown", f.kind);
    if ((f.kind >= kind_qdata) != (it->second->quant != nullptr))
      fail("commit_checkpoint: '{}' is {} but has a {} fragment", f.tensor,
           it->second->quant ? "quantized" : "a float tensor", kind_name(f.kind));
    by[f.tensor].push_back(&f);
    files[f.file] = 0;
    if (f.kind < 3) present[f.kind] = true;
  }
  for (auto& [fname, size] : files) {
    size = fs::file_size(tmp_dir / fname, ec);
    if (ec) fail("commit_checkpoint: {} is missing: {}", (tmp_dir / fname).string(), ec.message());
  }
  for (auto& f : all)
    if (f.length % size_of(f.dtype) || f.offset + f.length > files[f.file])
      fail("commit_checkpoint: the fragment of '{}' at bytes [{}, {}) of {} is past its end ({})",
           f.tensor, f.offset, f.offset + f.length, f.file, files[f.file]);
  // Exact coverage: parameters always, each moment for every tensor or for none, every part of
  // a quantized tensor.
  for (auto& t : tensors) {
    auto& v = by[*t.name];
    std::sort(v.begin(), v.end(), [](auto* a, auto* b) {
      return a->kind != b->kind ? a->kind < b->kind : a->elem_begin < b->elem_begin;
    });
    for (auto& part : stored_parts(t.quant, *t.shape, present, "commit_checkpoint: " + *t.name)) {
      uint64_t covered = 0;
      for (auto* f : v) {
        if (f->kind != part.kind) continue;
        if (part.kind >= kind_qdata && f->dtype != part.type)  // float kinds: read refuses by name
          fail("commit_checkpoint: {} of '{}' is {}, expected {}", kind_name(part.kind), *t.name,
               dtype_name(f->dtype), dtype_name(part.type));
        if (f->elem_begin != covered)
          fail("commit_checkpoint: {} of '{}': element {} follows {} ({} of rank file {})",
               kind_name(part.kind), *t.name, f->elem_begin, covered,
               f->elem_begin > covered ? "gap" : "overlap", f->file);
        covered += f->length / size_of(f->dtype);
      }
      if (covered != part.elems)
        fail("commit_checkpoint: {} of '{}' covers {} of its {} elements", kind_name(part.kind),
             *t.name, covered, part.elems);
    }
  }

  const std::string bytes = encode_manifest(tensors, info, files, by);
  write_file_atomic(tmp_dir / k_manifest, bytes.data(), bytes.size());  // fsyncs tmp_dir too
}

namespace {
// True when final_dir already holds the checkpoint tmp_dir holds (a retry of a commit that
// failed after its rename: a full disk at the fsync of ROOT or at `latest`): tmp_dir is then
// dropped and the commit finishes on the existing folder, so a retry is never blocked by its own
// earlier attempt. The manifest lists every file's size and every fragment's CRC, so equal
// manifests mean equal checkpoints; the existing folder is verified too. Another checkpoint in
// the way is refused (never overwritten). False when final_dir does not exist.
bool already_committed(const fs::path& final_dir, const fs::path& tmp_dir) {
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) return false;
  const fs::path theirs = manifest_path(final_dir);
  const bool same = fs::is_regular_file(theirs, ec) &&
                    read_text_file(theirs) == read_text_file(manifest_path(tmp_dir));
  abandon_checkpoint(tmp_dir);
  if (!same)
    fail("checkpoint {} already exists with other contents; refusing to overwrite it",
         final_dir.string());
  if (auto r = verify_checkpoint(final_dir); !r.ok)
    fail("checkpoint {} already exists but does not verify ({}); move it away to write it again",
         final_dir.string(), r.problems.front());
  return true;
}
}  // namespace

fs::path publish_checkpoint(const fs::path& root, const fs::path& tmp_dir, int step, int keep) {
  check_tmp_dir(root, tmp_dir, step);
  const fs::path final_dir = root / step_name(step);
  if (!already_committed(final_dir, tmp_dir)) {
    std::error_code ec = io_fault_ec();
    if (!ec) fs::rename(tmp_dir, final_dir, ec);
    if (ec) fail("rename {} -> {} failed: {}", tmp_dir.string(), final_dir.string(), ec.message());
  }
  fsync_path(root);
  write_file_atomic(root / "latest", step_name(step) + "\n");
  prune(root, final_dir, keep);
  return final_dir;
}

fs::path commit_checkpoint(const fs::path& root, const fs::path& tmp_dir, const param_layout& L,
                           const std::vector<fragment>& all, const manifest_info& info, int keep) {
  write_manifest(root, tmp_dir, L, all, info);
  return publish_checkpoint(root, tmp_dir, info.step, keep);
}

fs::path save_checkpoint(const fs::path& root, const checkpoint_view& c, int keep) {
  if (!c.layout || !c.params) fail("save_checkpoint: nothing to save");
  const fs::path tmp = begin_checkpoint(root, c.step);
  const bool moments = c.exp_avg && c.exp_avg_sq;
  shard_data s{0, c.layout->total, c.params, moments ? c.exp_avg : nullptr,
               moments ? c.exp_avg_sq : nullptr};
  try {
    auto frags = write_shard(tmp, 0, *c.layout, s);
    return commit_checkpoint(root, tmp, *c.layout, frags, {c.step, 1, 0, c.config_toml, c.state},
                             keep);
  } catch (const error&) {
    abandon_checkpoint(tmp);  // a failed write's data would keep a full disk full
    throw;
  }
}

}  // namespace zf::storage
