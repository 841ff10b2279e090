#include "storage/checkpoint.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <kj/exception.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <string_view>
#include <unordered_map>

#include "manifest.capnp.h"
#include "runtime/config.hpp"
#include "runtime/error.hpp"
#include "storage/fs_util.hpp"
#include "storage/safetensors.hpp"
#include "storage/uring_file.hpp"

namespace fs = std::filesystem;

namespace zf::storage {
namespace {

constexpr const char* k_magic = "zeroflow-checkpoint";
constexpr const char* k_manifest = "manifest";
constexpr uint64_t k_page = 4096;
constexpr std::size_t k_piece = 256u << 10;  // copy + CRC granularity (stays in L2)
constexpr std::size_t k_io = 16u << 20;      // read granularity

std::string step_name(int step) {
  return fmt::format("step-{:06d}", step);
}
std::string rank_file(int rank) {
  return fmt::format("rank-{:05d}.bin", rank);
}
uint64_t round_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out;
  for (auto d : s) {
    if (!out.empty()) out += ',';
    out += std::to_string(d);
  }
  return out;
}

std::size_t numel_of(const std::vector<int64_t>& shape) {
  std::size_t n = 1;
  for (auto d : shape) n *= d < 0 ? 0 : static_cast<std::size_t>(d);
  return n;
}

bool is_step_dir_name(const std::string& n) {
  return n.size() > 5 && n.starts_with("step-") &&
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
    fs::rename(dirs[i], del, ec);
    if (ec) fail("cannot prune checkpoint {}: {}", dirs[i].string(), ec.message());
  }
  for (auto& e : fs::directory_iterator(root, ec)) {
    const auto n = e.path().filename().string();
    if (e.is_directory() && n.size() > 4 && n.ends_with(".del") &&
        is_step_dir_name(n.substr(0, n.size() - 4)))
      fs::remove_all(e.path(), ec);
  }
}

struct fd_guard {
  int fd = -1;
  explicit fd_guard(int f = -1) : fd(f) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  void reset(int f) {
    if (fd >= 0) ::close(fd);
    fd = f;
  }
};

// Bytes read (fewer than n only at end of file).
std::size_t pread_all(int fd, void* dst, std::size_t n, uint64_t off, const fs::path& p) {
  auto* d = static_cast<std::byte*>(dst);
  std::size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, d + done, std::min(n - done, k_io), static_cast<off_t>(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail("read {} failed at byte {}: {}", p.string(), off + done, std::strerror(errno));
    if (r == 0) break;
    done += static_cast<std::size_t>(r);
  }
  return done;
}

fs::path manifest_path(const fs::path& dir) {
  return dir / k_manifest;
}

[[noreturn]] void format1(const fs::path& dir) {
  fail(
      "{} is a format-1 checkpoint (manifest.json + safetensors files); this build reads "
      "checkpoint format {} only",
      dir.string(), k_checkpoint_version);
}

fs::path from_latest(const fs::path& latest) {
  std::string name = read_text_file(latest);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  fs::path d = latest.parent_path() / name;
  if (!fs::exists(manifest_path(d))) {
    if (fs::exists(d / "manifest.json")) format1(d);
    fail("{} names {}, which has no manifest", latest.string(), d.string());
  }
  return d;
}

// ---- reading fragments ----------------------------------------------------------------------

struct need {  // one fragment to read, and where the wanted part of it goes
  const fragment* f;
  uint64_t skip;   // fragment elements before the first wanted one
  uint64_t count;  // elements wanted
  float* dst;      // destination of the first wanted element
};

// The fragments of the given kinds that [begin, end) of layout needs; outs[kind] may be null.
std::vector<need> plan(const checkpoint_manifest& m, const param_layout& L, std::size_t begin,
                       std::size_t end, float* const outs[3]) {
  std::vector<need> needs;
  const std::string mp = manifest_path(m.dir).string();
  for (auto& p : L.params) {
    if (p.numel == 0 || p.offset >= end || p.offset + p.numel <= begin) continue;
    const tensor_entry* t = m.find(p.name);
    if (!t)
      fail("checkpoint {} has no tensor '{}' (the model expects F32[{}])", m.dir.string(), p.name,
           shape_str(p.shape));
    if (t->dtype != "F32" || t->shape != p.shape)
      fail("checkpoint {}: tensor '{}' is {}[{}], the model expects F32[{}]", m.dir.string(),
           p.name, t->dtype, shape_str(t->shape), shape_str(p.shape));
    const uint64_t lo = std::max(begin, p.offset) - p.offset;
    const uint64_t hi = std::min(end, p.offset + p.numel) - p.offset;
    for (int k = 0; k < 3; ++k) {
      if (!outs[k]) continue;
      uint64_t covered = lo;
      bool any = false;
      for (auto& f : t->fragments) {  // sorted by kind, then elem_begin
        if (f.kind != k) continue;
        any = true;
        if (f.length % sizeof(float))
          fail("corrupt checkpoint manifest {}: a fragment of '{}' has {} bytes", mp, p.name,
               f.length);
        const uint64_t fb = f.elem_begin, fe = fb + f.length / sizeof(float);
        if (fe <= covered || fb >= hi) continue;
        if (fb > covered) break;  // a gap
        const uint64_t a = covered, b = std::min(fe, hi);
        needs.push_back({&f, a - fb, b - a, outs[k] + (p.offset + a - begin)});
        covered = b;
      }
      if (covered < hi) {
        if (!any)
          fail("checkpoint {} holds no {} for tensor '{}' (saved without optimizer state?)",
               m.dir.string(), kind_name(k), p.name);
        fail("corrupt checkpoint manifest {}: elements [{}, {}) of '{}' ({}) are in no fragment",
             mp, covered, hi, p.name, kind_name(k));
      }
    }
  }
  return needs;
}

// Reads and CRC-checks every needed fragment, then copies the wanted elements out. With
// stage == false a fragment that is wanted whole is read straight into its destination (for
// callers that own the outputs and drop them on failure); otherwise everything is staged and
// nothing reaches the outputs unless every fragment verified.
void read_fragments(const checkpoint_manifest& m, std::vector<need> needs, bool stage) {
  std::map<std::string, uint64_t> listed(m.files.begin(), m.files.end());
  std::sort(needs.begin(), needs.end(), [](const need& a, const need& b) {
    return a.f->file != b.f->file ? a.f->file < b.f->file : a.f->offset < b.f->offset;
  });
  std::vector<std::vector<float>> staged(needs.size());
  std::string cur;
  fd_guard fd;
  uint64_t size = 0;
  for (std::size_t i = 0; i < needs.size(); ++i) {
    const need& n = needs[i];
    const fragment& f = *n.f;
    const fs::path p = m.dir / f.file;
    auto it = listed.find(f.file);
    if (it == listed.end())
      fail("corrupt checkpoint manifest {}: tensor '{}' names file {}, which it does not list",
           manifest_path(m.dir).string(), f.tensor, f.file);
    if (f.file != cur) {
      cur.clear();
      fd.reset(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
      if (fd.fd < 0) {
        if (errno == ENOENT)
          fail("checkpoint file {} is missing (it holds tensor '{}')", p.string(), f.tensor);
        fail("cannot open checkpoint file {} (tensor '{}'): {}", p.string(), f.tensor,
             std::strerror(errno));
      }
      struct stat st {};
      if (::fstat(fd.fd, &st) != 0) fail("cannot stat {}: {}", p.string(), std::strerror(errno));
      size = static_cast<uint64_t>(st.st_size);
      if (size < it->second)
        fail("checkpoint file {} is truncated: {} bytes, the manifest says {} (tensor '{}')",
             p.string(), size, it->second, f.tensor);
      if (size > it->second)
        fail("checkpoint file {} is corrupt: {} bytes, the manifest says {} (tensor '{}')",
             p.string(), size, it->second, f.tensor);
      cur = f.file;
    }
    if (f.offset + f.length > size)
      fail("corrupt checkpoint manifest {}: a fragment of '{}' ends at byte {} of {} ({} bytes)",
           manifest_path(m.dir).string(), f.tensor, f.offset + f.length, p.string(), size);
    const bool whole = !stage && n.skip == 0 && n.count * sizeof(float) == f.length;
    float* target = n.dst;
    if (!whole) {
      staged[i].resize(f.length / sizeof(float));
      target = staged[i].data();
    }
    if (pread_all(fd.fd, target, f.length, f.offset, p) != f.length)
      fail("checkpoint file {} is truncated inside tensor '{}'", p.string(), f.tensor);
    const uint32_t crc = crc32_of(target, f.length);
    if (crc != f.crc32)
      fail(
          "checkpoint file {} is corrupt: tensor '{}' ({}, {} bytes at offset {}) has CRC-32 "
          "{:08x}, the manifest says {:08x}",
          p.string(), f.tensor, kind_name(f.kind), f.length, f.offset, crc, f.crc32);
  }
  for (std::size_t i = 0; i < needs.size(); ++i)
    if (!staged[i].empty())
      std::memcpy(needs[i].dst, staged[i].data() + needs[i].skip, needs[i].count * sizeof(float));
}

void check_range(const param_layout& L, std::size_t begin, std::size_t end, const char* what) {
  if (begin > end || end > L.total)
    fail("{}: slice [{}, {}) is outside the layout's {} parameters", what, begin, end, L.total);
}

// ---- manifest encoding ----------------------------------------------------------------------

::Manifest::Kind to_capnp(int kind) {
  switch (kind) {
    case kind_param:
      return ::Manifest::Kind::PARAM;
    case kind_exp_avg:
      return ::Manifest::Kind::EXP_AVG;
    case kind_exp_avg_sq:
      return ::Manifest::Kind::EXP_AVG_SQ;
  }
  fail("fragment kind {} is not param, exp_avg or exp_avg_sq", kind);
}

std::string encode_manifest(const param_layout& L, const manifest_info& info,
                            const std::map<std::string, uint64_t>& files,
                            std::unordered_map<std::string, std::vector<const fragment*>>& by) {
  capnp::MallocMessageBuilder body;
  auto m = body.initRoot<::Manifest>();
  m.setStep(info.step);
  m.setWorld(info.world);
  m.setZeroStage(info.zero_stage);
  m.setConfigToml(info.config_toml);
  m.setStateJson(info.state.dump());
  auto fl = m.initFiles(static_cast<unsigned>(files.size()));
  unsigned i = 0;
  for (auto& [name, bytes] : files) {
    fl[i].setName(name);
    fl[i].setBytes(bytes);
    ++i;
  }
  auto tl = m.initTensors(static_cast<unsigned>(L.params.size()));
  i = 0;
  for (auto& p : L.params) {
    auto t = tl[i++];
    t.setName(p.name);
    t.setDtype("F32");
    auto sh = t.initShape(static_cast<unsigned>(p.shape.size()));
    for (unsigned d = 0; d < p.shape.size(); ++d) sh.set(d, p.shape[d]);
    auto& fr = by[p.name];
    auto fb = t.initFragments(static_cast<unsigned>(fr.size()));
    for (unsigned j = 0; j < fr.size(); ++j) {
      fb[j].setKind(to_capnp(fr[j]->kind));
      fb[j].setFile(fr[j]->file);
      fb[j].setOffset(fr[j]->offset);
      fb[j].setLength(fr[j]->length);
      fb[j].setElemBegin(fr[j]->elem_begin);
      fb[j].setCrc32(fr[j]->crc32);
    }
  }
  auto bw = capnp::messageToFlatArray(body);
  auto bb = bw.asBytes();
  capnp::MallocMessageBuilder outer;
  auto r = outer.initRoot<::ManifestFile>();
  r.setMagic(k_magic);
  r.setVersion(k_checkpoint_version);
  r.setCrc32(crc32_of(bb.begin(), bb.size()));
  r.setBody(capnp::Data::Reader(bb.begin(), bb.size()));
  auto ow = capnp::messageToFlatArray(outer);
  auto ob = ow.asBytes();
  return std::string(reinterpret_cast<const char*>(ob.begin()), ob.size());
}

// CRC of [off, off+len) of an open file, read in pieces.
uint32_t crc_of_range(int fd, uint64_t off, uint64_t len, std::vector<std::byte>& buf,
                      const fs::path& p) {
  uint32_t crc = 0;
  buf.resize(std::min<uint64_t>(len, k_io));
  while (len) {
    const std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(len, buf.size()));
    if (pread_all(fd, buf.data(), n, off, p) != n)
      fail("checkpoint file {} is truncated at byte {}", p.string(), off);
    crc = crc32_of(buf.data(), n, crc);
    off += n;
    len -= n;
  }
  return crc;
}

}  // namespace

const char* kind_name(int kind) {
  switch (kind) {
    case kind_param:
      return "param";
    case kind_exp_avg:
      return "exp_avg";
    case kind_exp_avg_sq:
      return "exp_avg_sq";
  }
  return "unknown";
}

std::size_t tensor_entry::numel() const {
  return numel_of(shape);
}

const tensor_entry* checkpoint_manifest::find(const std::string& name) const {
  for (auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

bool checkpoint_manifest::has_kind(int kind) const {
  for (auto& t : tensors)
    for (auto& f : t.fragments)
      if (f.kind == kind) return true;
  return false;
}

// ---- writing --------------------------------------------------------------------------------

fs::path begin_checkpoint(const fs::path& root, int step) {
  if (step < 0) fail("begin_checkpoint: step {} is negative", step);
  fs::create_directories(root);
  const std::string name = step_name(step);
  const fs::path final_dir = root / name, tmp = root / (name + ".tmp");
  if (fs::exists(final_dir))
    fail("checkpoint {} already exists; refusing to overwrite it", final_dir.string());
  fs::remove_all(tmp);  // leftovers of a crashed write are never committed data
  fs::create_directory(tmp);
  return tmp;
}

std::vector<fragment> write_shard(const fs::path& tmp_dir, int rank, const param_layout& L,
                                  const shard_data& s, const write_options& o) {
  if (rank < 0) fail("write_shard: rank {} is negative", rank);
  check_range(L, s.begin, s.end, "write_shard");
  const std::size_t n = s.end - s.begin;
  if (n == 0) return {};
  if (!s.params) fail("write_shard: rank {} passed no parameters", rank);
  struct section {
    int kind;
    const float* src;
  };
  std::vector<section> secs{{kind_param, s.params}};
  if (s.exp_avg) secs.push_back({kind_exp_avg, s.exp_avg});
  if (s.exp_avg_sq) secs.push_back({kind_exp_avg_sq, s.exp_avg_sq});
  const uint64_t bytes = n * sizeof(float), stride = round_up(bytes, k_page);
  const std::string file = rank_file(rank);

  std::vector<const param_info*> ts;  // tensors overlapping the slice, in flat order
  for (auto& p : L.params)
    if (p.numel && p.offset < s.end && p.offset + p.numel > s.begin) ts.push_back(&p);
  std::sort(ts.begin(), ts.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  std::vector<fragment> out;  // in file order
  for (std::size_t k = 0; k < secs.size(); ++k)
    for (auto* p : ts) {
      const std::size_t lo = std::max(s.begin, p->offset),
                        hi = std::min(s.end, p->offset + p->numel);
      out.push_back({p->name, secs[k].kind, file, k * stride + (lo - s.begin) * sizeof(float),
                     (hi - lo) * sizeof(float), lo - p->offset, 0});
    }

  uring_writer w(tmp_dir / file, {o.chunk_bytes, o.queue_depth, o.direct});
  const std::size_t chunk = w.chunk_bytes();
  std::size_t fi = 0;  // the fragment the next byte belongs to
  for (std::size_t k = 0; k < secs.size(); ++k) {
    const auto* src = reinterpret_cast<const std::byte*>(secs[k].src);
    const uint64_t base = k * stride;
    for (uint64_t pos = 0; pos < bytes; pos += chunk) {
      const std::size_t m = static_cast<std::size_t>(std::min<uint64_t>(chunk, bytes - pos));
      std::byte* buf = w.acquire();
      for (std::size_t q = 0; q < m; q += k_piece) {  // copy, then CRC while it is in cache
        const std::size_t len = std::min(k_piece, m - q);
        std::memcpy(buf + q, src + pos + q, len);
        uint64_t a = base + pos + q;
        const uint64_t e = a + len;
        const std::byte* d = buf + q;
        while (a < e && fi < out.size()) {
          fragment& f = out[fi];
          if (a >= f.offset + f.length) {
            ++fi;
            continue;
          }
          if (a < f.offset) {  // bytes between tensors (a layout with holes): in no fragment
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

fs::path commit_checkpoint(const fs::path& root, const fs::path& tmp_dir, const param_layout& L,
                           const std::vector<fragment>& all, const manifest_info& info, int keep) {
  const std::string name = step_name(info.step);
  if (tmp_dir.filename() != name + ".tmp")
    fail("commit_checkpoint: {} is not the folder of step {} ({}.tmp)", tmp_dir.string(), info.step,
         name);
  std::error_code ec;
  if (!fs::is_directory(tmp_dir) || !fs::equivalent(tmp_dir.parent_path(), root, ec))
    fail("commit_checkpoint: {} is not a folder in {}", tmp_dir.string(), root.string());

  std::unordered_map<std::string, std::vector<const fragment*>> by;
  std::map<std::string, uint64_t> files;
  bool present[3] = {false, false, false};
  for (auto& f : all) {
    if (!L.find(f.tensor))
      fail("commit_checkpoint: {} has a fragment of '{}', which the layout does not have", f.file,
           f.tensor);
    if (f.kind < 0 || f.kind > 2) fail("commit_checkpoint: fragment kind {} is unknown", f.kind);
    by[f.tensor].push_back(&f);
    files[f.file] = 0;
    present[f.kind] = true;
  }
  for (auto& [fname, size] : files) {
    size = fs::file_size(tmp_dir / fname, ec);
    if (ec) fail("commit_checkpoint: {} is missing: {}", (tmp_dir / fname).string(), ec.message());
  }
  for (auto& f : all)
    if (f.length % sizeof(float) || f.offset + f.length > files[f.file])
      fail("commit_checkpoint: the fragment of '{}' at bytes [{}, {}) of {} is past its end ({})",
           f.tensor, f.offset, f.offset + f.length, f.file, files[f.file]);
  // Exact coverage: parameters always, each moment for every tensor or for none.
  for (auto& p : L.params) {
    auto& v = by[p.name];
    std::sort(v.begin(), v.end(), [](auto* a, auto* b) {
      return a->kind != b->kind ? a->kind < b->kind : a->elem_begin < b->elem_begin;
    });
    for (int k = 0; k < 3; ++k) {
      if (!present[k] && k != kind_param) continue;
      uint64_t covered = 0;
      for (auto* f : v) {
        if (f->kind != k) continue;
        if (f->elem_begin != covered)
          fail("commit_checkpoint: {} of '{}': element {} follows {} ({} of rank file {})",
               kind_name(k), p.name, f->elem_begin, covered,
               f->elem_begin > covered ? "gap" : "overlap", f->file);
        covered += f->length / sizeof(float);
      }
      if (covered != p.numel)
        fail("commit_checkpoint: {} of '{}' covers {} of its {} elements", kind_name(k), p.name,
             covered, p.numel);
    }
  }

  const std::string bytes = encode_manifest(L, info, files, by);
  write_file_atomic(tmp_dir / k_manifest, bytes.data(), bytes.size());  // fsyncs tmp_dir too
  const fs::path final_dir = root / name;
  if (fs::exists(final_dir))
    fail("checkpoint {} already exists; refusing to overwrite it", final_dir.string());
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) fail("rename {} -> {} failed: {}", tmp_dir.string(), final_dir.string(), ec.message());
  fsync_path(root);
  write_file_atomic(root / "latest", name + "\n");
  prune(root, final_dir, keep);
  return final_dir;
}

fs::path save_checkpoint(const fs::path& root, const checkpoint_view& c, int keep) {
  if (!c.layout || !c.params) fail("save_checkpoint: nothing to save");
  const fs::path tmp = begin_checkpoint(root, c.step);
  const bool moments = c.exp_avg && c.exp_avg_sq;
  shard_data s{0, c.layout->total, c.params, moments ? c.exp_avg : nullptr,
               moments ? c.exp_avg_sq : nullptr};
  auto frags = write_shard(tmp, 0, *c.layout, s);
  return commit_checkpoint(root, tmp, *c.layout, frags, {c.step, 1, 0, c.config_toml, c.state},
                           keep);
}

// ---- reading --------------------------------------------------------------------------------

fs::path resolve_checkpoint(const fs::path& dir) {
  if (fs::exists(manifest_path(dir))) return dir;
  if (fs::exists(dir / "manifest.json")) format1(dir);
  if (dir.filename() == "latest" && fs::is_regular_file(dir)) return from_latest(dir);
  for (const fs::path& root : {dir, dir / "checkpoints"})
    if (fs::exists(root / "latest")) return from_latest(root / "latest");
  fail("no checkpoint at {} (expected a step folder with a manifest, or a 'latest' file)",
       dir.string());
}

checkpoint_manifest read_checkpoint_manifest(const fs::path& dir_in) {
  checkpoint_manifest out;
  out.dir = resolve_checkpoint(dir_in);
  const fs::path mp = manifest_path(out.dir);
  const std::string text = read_text_file(mp);
  auto corrupt = [&](const std::string& why) {
    fail("corrupt checkpoint manifest {}: {}", mp.string(), why);
  };
  if (text.empty() || text.size() % sizeof(capnp::word))
    corrupt(fmt::format("{} bytes is not a whole Cap'n Proto message", text.size()));
  auto words = kj::heapArray<capnp::word>(text.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), text.data(), text.size());
  try {
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = std::max<uint64_t>(words.size() * 4, 8u << 20);
    capnp::FlatArrayMessageReader outer(words, opts);
    if (outer.getEnd() != words.end()) corrupt("bytes after the end of the message");
    auto r = outer.getRoot<::ManifestFile>();
    if (std::string_view(r.getMagic().cStr()) != k_magic)
      fail("{} is not a zeroflow checkpoint manifest", mp.string());
    out.version = static_cast<int>(r.getVersion());
    if (out.version != k_checkpoint_version)
      fail("{}: checkpoint format version {} is not supported (this build reads version {})",
           mp.string(), out.version, k_checkpoint_version);
    auto body = r.getBody();
    const uint32_t crc = crc32_of(body.begin(), body.size());
    if (crc != r.getCrc32())
      corrupt(fmt::format("CRC-32 {:08x}, the manifest says {:08x}", crc, r.getCrc32()));
    if (body.size() % sizeof(capnp::word) ||
        reinterpret_cast<uintptr_t>(body.begin()) % alignof(capnp::word))
      corrupt("the body is not word-aligned");
    kj::ArrayPtr<const capnp::word> bw(reinterpret_cast<const capnp::word*>(body.begin()),
                                       body.size() / sizeof(capnp::word));
    capnp::FlatArrayMessageReader inner(bw, opts);
    auto m = inner.getRoot<::Manifest>();
    if (m.getStep() < 0 || m.getStep() > INT32_MAX) corrupt(fmt::format("step {}", m.getStep()));
    out.step = static_cast<int>(m.getStep());
    out.world = m.getWorld();
    out.zero_stage = m.getZeroStage();
    out.config_toml = m.getConfigToml().cStr();
    try {
      out.state = nlohmann::json::parse(std::string(m.getStateJson().cStr()));
    } catch (const nlohmann::json::exception& e) {
      corrupt(fmt::format("trainer state: {}", e.what()));
    }
    for (auto f : m.getFiles()) out.files.emplace_back(f.getName().cStr(), f.getBytes());
    for (auto t : m.getTensors()) {
      tensor_entry e;
      e.name = t.getName().cStr();
      e.dtype = t.getDtype().cStr();
      for (auto d : t.getShape()) e.shape.push_back(d);
      for (auto f : t.getFragments())
        e.fragments.push_back({e.name, static_cast<int>(f.getKind()), f.getFile().cStr(),
                               f.getOffset(), f.getLength(), f.getElemBegin(), f.getCrc32()});
      std::sort(e.fragments.begin(), e.fragments.end(), [](auto& a, auto& b) {
        return a.kind != b.kind ? a.kind < b.kind : a.elem_begin < b.elem_begin;
      });
      out.tensors.push_back(std::move(e));
    }
  } catch (const kj::Exception& e) {
    corrupt(e.getDescription().cStr());
  }
  return out;
}

loaded_checkpoint read_manifest(const fs::path& dir) {
  auto m = read_checkpoint_manifest(dir);
  loaded_checkpoint out;
  out.dir = m.dir;
  out.step = m.step;
  out.config_toml = std::move(m.config_toml);
  out.state = std::move(m.state);
  return out;
}

loaded_checkpoint load_checkpoint(const fs::path& dir, const param_layout& layout) {
  auto m = read_checkpoint_manifest(dir);
  loaded_checkpoint out;
  out.dir = m.dir;
  out.step = m.step;
  out.config_toml = m.config_toml;
  out.state = m.state;
  out.params.assign(layout.total, 0.0f);
  if (m.has_kind(kind_exp_avg) && m.has_kind(kind_exp_avg_sq)) {
    out.exp_avg.assign(layout.total, 0.0f);
    out.exp_avg_sq.assign(layout.total, 0.0f);
  }
  float* outs[3] = {out.params.data(), out.exp_avg.empty() ? nullptr : out.exp_avg.data(),
                    out.exp_avg_sq.empty() ? nullptr : out.exp_avg_sq.data()};
  read_fragments(m, plan(m, layout, 0, layout.total, outs), false);  // the outputs are ours
  return out;
}

void load_range(const fs::path& dir, const param_layout& layout, std::size_t begin, std::size_t end,
                float* params, float* exp_avg, float* exp_avg_sq) {
  check_range(layout, begin, end, "load_range");
  auto m = read_checkpoint_manifest(dir);
  float* outs[3] = {params, exp_avg, exp_avg_sq};
  read_fragments(m, plan(m, layout, begin, end, outs), true);
}

verify_report verify_checkpoint(const fs::path& dir) {
  verify_report r;
  checkpoint_manifest m;
  try {
    m = read_checkpoint_manifest(dir);
  } catch (const zf::error& e) {
    r.problems.push_back(e.what());
    return r;
  }
  r.step = m.step;
  auto& probs = r.problems;
  std::map<std::string, std::pair<uint64_t, bool>> files;  // listed size, usable
  for (auto& [name, bytes] : m.files) {
    const fs::path p = m.dir / name;
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    bool ok = false;
    if (ec)
      probs.push_back(fmt::format("checkpoint file {} is missing", p.string()));
    else if (size < bytes)
      probs.push_back(fmt::format("checkpoint file {} is truncated: {} bytes, the manifest says {}",
                                  p.string(), size, bytes));
    else if (size > bytes)
      probs.push_back(fmt::format("checkpoint file {} is corrupt: {} bytes, the manifest says {}",
                                  p.string(), size, bytes));
    else
      ok = true;
    files[name] = {bytes, ok};
  }
  bool present[3] = {m.has_kind(0), m.has_kind(1), m.has_kind(2)};
  std::map<std::string, std::vector<const fragment*>> by_file;
  for (auto& t : m.tensors) {
    if (t.dtype != "F32")
      probs.push_back(fmt::format("tensor '{}' has dtype {}, expected F32", t.name, t.dtype));
    const std::size_t numel = t.numel();
    for (int k = 0; k < 3; ++k) {
      if (!present[k] && k != kind_param) continue;
      uint64_t covered = 0;
      for (auto& f : t.fragments) {
        if (f.kind != k) continue;
        if (f.length % sizeof(float))
          probs.push_back(
              fmt::format("a fragment of '{}' ({}) has {} bytes", t.name, kind_name(k), f.length));
        if (f.elem_begin != covered)
          probs.push_back(fmt::format(
              "tensor '{}' ({}): elements [{}, {}) {}", t.name, kind_name(k),
              std::min<uint64_t>(covered, f.elem_begin), std::max<uint64_t>(covered, f.elem_begin),
              f.elem_begin > covered ? "are in no fragment" : "are in two fragments"));
        covered = std::max<uint64_t>(covered, f.elem_begin + f.length / sizeof(float));
        auto it = files.find(f.file);
        if (it == files.end())
          probs.push_back(fmt::format(
              "a fragment of '{}' names {}, which the manifest does not list", t.name, f.file));
        else if (f.offset + f.length > it->second.first)
          probs.push_back(fmt::format("a fragment of '{}' ends at byte {} of {} ({} bytes)", t.name,
                                      f.offset + f.length, f.file, it->second.first));
        else if (it->second.second)
          by_file[f.file].push_back(&f);
      }
      if (covered != numel)
        probs.push_back(fmt::format("tensor '{}' ({}): fragments cover {} of {} elements", t.name,
                                    kind_name(k), covered, numel));
    }
  }
  std::vector<std::byte> buf;
  for (auto& [name, frags] : by_file) {
    const fs::path p = m.dir / name;
    fd_guard fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.fd < 0) {
      probs.push_back(fmt::format("cannot open {}: {}", p.string(), std::strerror(errno)));
      continue;
    }
    std::sort(frags.begin(), frags.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (auto* f : frags) {
      try {
        const uint32_t crc = crc_of_range(fd.fd, f->offset, f->length, buf, p);
        r.bytes += f->length;
        if (crc != f->crc32)
          probs.push_back(fmt::format(
              "checkpoint file {} is corrupt: tensor '{}' ({}, {} bytes at offset {}) has "
              "CRC-32 {:08x}, the manifest says {:08x}",
              p.string(), f->tensor, kind_name(f->kind), f->length, f->offset, crc, f->crc32));
      } catch (const zf::error& e) {
        probs.push_back(e.what());
      }
    }
  }
  r.ok = probs.empty();
  return r;
}

// ---- Hugging Face interchange ---------------------------------------------------------------

fs::path export_safetensors(const fs::path& dir, const fs::path& file) {
  if (fs::exists(file)) fail("export: {} exists; refusing to overwrite it", file.string());
  auto m = read_checkpoint_manifest(dir);
  run_config cfg;
  apply_toml(cfg, m.config_toml, manifest_path(m.dir).string());
  const param_layout L = layout_of(cfg.model);
  std::vector<float> params(L.total);
  float* outs[3] = {params.data(), nullptr, nullptr};
  read_fragments(m, plan(m, L, 0, L.total, outs), false);

  const auto& mc = cfg.model;
  nlohmann::ordered_json c;
  c["model_type"] = "gpt2";
  c["architectures"] = {"GPT2LMHeadModel"};
  c["n_layer"] = mc.n_layer;
  c["n_head"] = mc.n_head;
  c["n_embd"] = mc.n_embd;
  c["n_positions"] = mc.n_positions;
  c["n_ctx"] = mc.n_positions;
  c["vocab_size"] = mc.vocab_size;
  c["layer_norm_epsilon"] = 1e-5;
  c["activation_function"] = "gelu_new";
  const std::string text = c.dump(2) + "\n";
  const fs::path parent = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  const fs::path cj = parent / "config.json";
  const bool have_cj = fs::exists(cj);
  if (have_cj && read_text_file(cj) != text)
    fail("export: {} exists with other content; refusing to overwrite it", cj.string());
  fs::create_directories(parent);
  std::vector<st_write> w;
  for (auto& p : L.params)
    w.push_back({p.name, "F32", p.shape, params.data() + p.offset, p.numel * sizeof(float)});
  write_safetensors(file, w, {{"format", "pt"}});
  if (!have_cj) write_file_atomic(cj, text);
  return cj;
}

fs::path import_safetensors(const fs::path& file, const fs::path& root) {
  const fs::path parent = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  const fs::path cj = parent / "config.json";
  if (!fs::exists(cj))
    fail("import: {} is missing (the Hugging Face GPT-2 config.json must sit next to {})",
         cj.string(), file.string());
  nlohmann::json c;
  try {
    c = nlohmann::json::parse(read_text_file(cj));
  } catch (const nlohmann::json::exception& e) {
    fail("import: {} is not valid JSON: {}", cj.string(), e.what());
  }
  if (!c.is_object()) fail("import: {} is not a JSON object", cj.string());
  if (c.contains("model_type") && c["model_type"] != "gpt2")
    fail("import: {}: model_type is {}, expected \"gpt2\"", cj.string(), c["model_type"].dump());
  auto geti = [&](std::initializer_list<const char*> keys) {
    for (const char* k : keys)
      if (c.contains(k)) {
        if (!c[k].is_number_integer())
          fail("import: {}: '{}' is {}, expected an integer", cj.string(), k, c[k].dump());
        return c[k].get<int>();
      }
    fail("import: {} has no '{}'", cj.string(), *keys.begin());
  };
  if (c.contains("layer_norm_epsilon") &&
      (!c["layer_norm_epsilon"].is_number() ||
       std::abs(c["layer_norm_epsilon"].get<double>() - 1e-5) > 1e-12))
    fail("import: {}: layer_norm_epsilon is {}; zeroflow's GPT-2 uses 1e-05", cj.string(),
         c["layer_norm_epsilon"].dump());
  if (c.contains("activation_function") && c["activation_function"] != "gelu_new" &&
      c["activation_function"] != "gelu_pytorch_tanh")
    fail("import: {}: activation_function is {}; zeroflow's GPT-2 uses gelu_new", cj.string(),
         c["activation_function"].dump());
  run_config cfg;
  cfg.model.n_layer = geti({"n_layer"});
  cfg.model.n_head = geti({"n_head"});
  cfg.model.n_embd = geti({"n_embd"});
  cfg.model.n_positions = geti({"n_positions", "n_ctx"});
  cfg.model.vocab_size = geti({"vocab_size"});
  cfg.train.seq_len = std::min(cfg.train.seq_len, cfg.model.n_positions);
  try {
    validate(cfg);
  } catch (const zf::error& e) {
    fail("import: {}: {}", cj.string(), e.what());
  }
  if (fs::exists(root / "latest") || !step_dirs(root).empty())
    fail("import: {} already holds checkpoints; refusing to import into it", root.string());

  auto f = safetensors_file::open(file);
  const param_layout L = layout_of(cfg.model);
  std::vector<float> params(L.total);
  for (auto& p : L.params) {
    const st_tensor* t = f.find(p.name);
    if (!t) t = f.find("transformer." + p.name);
    if (!t)
      fail("import: {} has no tensor '{}' (the model in {} needs F32[{}])", file.string(), p.name,
           cj.string(), shape_str(p.shape));
    if (t->shape != p.shape)
      fail("import: {}: tensor '{}' is [{}], the model in {} needs [{}]", file.string(), p.name,
           shape_str(t->shape), cj.string(), shape_str(p.shape));
    auto v = f.to_f32(t->name);
    std::memcpy(params.data() + p.offset, v.data(), p.numel * sizeof(float));
  }
  checkpoint_view v;
  v.step = 0;
  v.config_toml = to_toml(cfg);
  v.layout = &L;
  v.params = params.data();
  v.state = {{"imported_from", file.string()}};
  return save_checkpoint(root, v, 1);
}

}  // namespace zf::storage
