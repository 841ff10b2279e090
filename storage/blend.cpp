#include "storage/blend.hpp"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>
#include <utility>

#include "runtime/core/error.hpp"
#include "storage/fs_util.hpp"
#include "storage/token_shard.hpp"

namespace fs = std::filesystem;

namespace zf::storage {
namespace {

// splitmix64 (Steele, Lea, Flood 2014): its outputs are fixed by its definition, where
// std::mt19937_64 fed to std::shuffle or a std:: distribution may draw differently from one
// standard library to the next.
struct splitmix64 {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n >= 1: the 2^64 mod n lowest outputs are redrawn, so the modulo is
  // unbiased.
  uint64_t below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    for (;;)
      if (const uint64_t r = next(); r >= threshold) return r % n;
  }
};

// One generator per (part, source) (source ~0: the part's interleaving), all from blend_seed.
splitmix64 stream(int64_t seed, uint64_t part, uint64_t source) {
  splitmix64 h{(part << 56) ^ source};
  return splitmix64{static_cast<uint64_t>(seed) ^ h.next()};
}

template <class T>
void fisher_yates(std::vector<T>& v, splitmix64& g) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[g.below(i)]);
}

struct source_info {
  std::string path;  // as data.sources names it
  double weight = 1;
  fs::path shard;         // the prepared .tok
  std::size_t n = 0;      // tokens
  std::size_t head = 0;   // train head: n - size_t(n * val_fraction), as storage::dataset splits
  std::size_t bytes = 0;  // the shard file's size and CRC (the cache key)
  uint32_t crc = 0, vocab = 0;
};

// A run of tokens of one source that lands next in a part of the blend.
struct piece {
  uint32_t source;
  uint32_t len;  // blend_chunk, or less for the last piece a source gives a part
  std::size_t start;
};

struct part_stats {
  std::size_t taken = 0, unique = 0;
};

std::string source_name(std::size_t i, const std::string& path) {
  return fmt::format("data.sources[{}] (\"{}\")", i, path);
}

std::vector<source_info> load_sources(const std::vector<data_source>& sources, double val_fraction,
                                      const fs::path& data_dir, const tokenizer& tok,
                                      const std::string& tokenizer_id,
                                      const corpus_checks& checks) {
  if (sources.empty()) fail("data.sources: expected at least one source to blend, got none");
  std::vector<source_info> src;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    source_info s;
    s.path = sources[i].path;
    s.weight = sources[i].weight;
    if (!(s.weight > 0) || !std::isfinite(s.weight))
      fail("{}: expected a finite weight > 0, got {}", source_name(i, s.path), s.weight);
    try {
      s.shard = prepare_corpus(s.path, data_dir, tok, tokenizer_id, checks);
      const token_shard t = token_shard::open(s.shard);
      s.n = t.size();
      s.vocab = t.vocab_size();
      s.crc = crc32_file(s.shard, &s.bytes);
    } catch (const error& e) {
      fail("{}: {}", source_name(i, s.path), e.what());
    }
    s.head = s.n - static_cast<std::size_t>(s.n * val_fraction);
    if (i > 0 && s.vocab != src[0].vocab)
      fail(
          "{}: its tokens are for a vocabulary of {}, {}'s for {}: a blend needs one tokenizer "
          "for all its sources",
          source_name(i, s.path), s.vocab, source_name(0, src[0].path), src[0].vocab);
    src.push_back(std::move(s));
  }
  return src;
}

// Token quotas proportional to the weights, summing to exactly `total` (largest remainder).
std::vector<std::size_t> quotas(const std::vector<source_info>& src, std::size_t total) {
  double w = 0;
  for (auto& s : src) w += s.weight;
  std::vector<std::size_t> q(src.size());
  std::vector<std::pair<double, std::size_t>> frac;  // (fractional part, source)
  std::size_t sum = 0;
  for (std::size_t i = 0; i < src.size(); ++i) {
    const double exact = double(total) * (src[i].weight / w);
    q[i] = std::min(static_cast<std::size_t>(exact), total);
    frac.emplace_back(exact - double(q[i]), i);
    sum += q[i];
  }
  std::stable_sort(frac.begin(), frac.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (std::size_t k = 0; sum < total; k = (k + 1) % frac.size(), ++sum) ++q[frac[k].second];
  for (std::size_t k = 0; sum > total; k = (k + 1) % q.size())  // float rounding's overshoot
    if (q[k] > 0) --q[k], --sum;
  return q;
}

// The pieces of one part (0: train heads, 1: validation tails), `total` tokens in all, in their
// blended order; stats[i] gets source i's share.
std::vector<piece> plan_part(const std::vector<source_info>& src, int part, std::size_t total,
                             int64_t seed, double val_fraction, std::vector<part_stats>& stats) {
  stats.assign(src.size(), {});
  if (total == 0) return {};
  const std::vector<std::size_t> q = quotas(src, total);
  std::vector<piece> pieces;
  for (std::size_t i = 0; i < src.size(); ++i) {
    const std::size_t begin = part == 0 ? 0 : src[i].head, end = part == 0 ? src[i].head : src[i].n;
    const std::size_t chunks = (end - begin) / blend_chunk;
    if (chunks == 0)
      fail(
          "{}: its {} has {} tokens (data.val_fraction = {}), fewer than one chunk of {}: a "
          "blend's sources need at least that many in each part",
          source_name(i, src[i].path), part == 0 ? "train head" : "validation tail", end - begin,
          val_fraction, blend_chunk);
    std::vector<std::size_t> order(chunks);
    std::iota(order.begin(), order.end(), std::size_t(0));
    splitmix64 g = stream(seed, uint64_t(part), i);
    fisher_yates(order, g);
    const std::size_t full = q[i] / blend_chunk, rest = q[i] % blend_chunk;
    for (std::size_t k = 0; k < full + (rest > 0); ++k)
      pieces.push_back(piece{uint32_t(i), uint32_t(k < full ? blend_chunk : rest),
                             begin + order[k % chunks] * blend_chunk});
    stats[i] = {q[i], std::min(q[i], chunks * blend_chunk)};
  }
  splitmix64 g = stream(seed, uint64_t(part), ~uint64_t(0));
  fisher_yates(pieces, g);
  return pieces;
}

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

nlohmann::ordered_json part_json(const part_stats& p) {
  return {{"tokens", p.taken},
          {"unique_tokens", p.unique},
          {"repeats", p.unique ? double(p.taken) / double(p.unique) : 0.0}};
}

void write_sidecar(const fs::path& p, const fs::path& blend, const std::vector<source_info>& src,
                   const std::vector<part_stats> (&stats)[2], std::size_t n_val,
                   double val_fraction, int64_t seed) {
  nlohmann::ordered_json j;
  std::size_t n = 0;
  for (auto& s : src) n += s.n;
  j["blend"] = blend.filename().string();
  j["tokens"] = n;
  j["train_tokens"] = n - n_val;
  j["val_tokens"] = n_val;
  j["val_fraction"] = val_fraction;
  j["blend_seed"] = seed;
  j["chunk_tokens"] = blend_chunk;
  j["sources"] = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < src.size(); ++i)
    j["sources"].push_back({{"path", src[i].path},
                            {"shard", src[i].shard.string()},
                            {"weight", src[i].weight},
                            {"source_tokens", src[i].n},
                            {"train", part_json(stats[0][i])},
                            {"val", part_json(stats[1][i])}});
  write_file_atomic(p, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace

fs::path prepare_blend(const std::vector<data_source>& sources, double val_fraction,
                       int64_t blend_seed, const fs::path& data_dir, const tokenizer& tok,
                       const std::string& tokenizer_id, const corpus_checks& checks) {
  const std::vector<source_info> src =
      load_sources(sources, val_fraction, data_dir, tok, tokenizer_id, checks);
  // The blend's split as storage::dataset computes it from the blend's size.
  std::size_t n = 0;
  for (auto& s : src) n += s.n;
  const std::size_t n_val = static_cast<std::size_t>(n * val_fraction), n_train = n - n_val;

  std::vector<part_stats> stats[2];
  const std::vector<piece> parts[2] = {
      plan_part(src, 0, n_train, blend_seed, val_fraction, stats[0]),
      plan_part(src, 1, n_val, blend_seed, val_fraction, stats[1])};

  // Named by everything that decides its bytes (the format's version "blend1" included).
  std::string key = fmt::format("blend1 chunk={} val_fraction={} seed={} tokenizer={}", blend_chunk,
                                val_fraction, blend_seed, tokenizer_id);
  for (auto& s : src) key += fmt::format(" {}:{}:{:08x}:{}", s.n, s.bytes, s.crc, s.weight);
  const std::string name = fmt::format("blend-{:016x}", fnv1a64(key));
  const fs::path out = data_dir / "cache" / (name + ".tok");
  const fs::path side = data_dir / "cache" / (name + ".json");

  std::error_code ec;
  if (fs::exists(out, ec)) {
    try {
      if (token_shard::open(out).size() == n) {
        if (!fs::exists(side, ec))
          write_sidecar(side, out, src, stats, n_val, val_fraction, blend_seed);
        return out;
      }
    } catch (const error&) {  // a damaged blend is rebuilt, never trusted
    }
  }
  std::vector<token_shard> shards;
  for (auto& s : src) shards.push_back(token_shard::open(s.shard));
  std::vector<int> ids(n);  // [train part | validation part]
  std::size_t at = 0;
  for (auto& part : parts)
    for (const piece& p : part) {
      shards[p.source].read(p.start, p.len, ids.data() + at);
      at += p.len;
    }
  if (at != n) fail("internal error: blend {} filled {} of {} tokens", out.string(), at, n);
  fs::create_directories(out.parent_path(), ec);
  if (ec) fail("cannot create {}: {}", out.parent_path().string(), ec.message());
  write_token_shard(out, ids, src[0].vocab);
  write_sidecar(side, out, src, stats, n_val, val_fraction, blend_seed);
  return out;
}

fs::path prepare_data(const data_config& d, const fs::path& data_dir, const tokenizer& tok,
                      const std::string& tokenizer_id, const corpus_checks& checks) {
  if (d.sources.empty()) return prepare_corpus(d.corpus, data_dir, tok, tokenizer_id, checks);
  return prepare_blend(d.sources, d.val_fraction, d.blend_seed, data_dir, tok, tokenizer_id,
                       checks);
}

}  // namespace zf::storage
