#include "storage/sample_metrics.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

#include "runtime/core/error.hpp"
#include "storage/fs_util.hpp"

namespace zf::storage {
namespace {

static_assert(std::endian::native == std::endian::little, "index files are little-endian");

constexpr char k_magic[8] = {'Z', 'F', 'M', 'I', 'D', 'X', '1', '\0'};
constexpr uint32_t k_version = 1;
constexpr uint32_t k_kind_values = 1, k_kind_order = 2;
constexpr const char* k_rebuild =
    "built for another corpus: rebuild it with `zeroflow data analyze`";

struct header {
  char magic[8];
  uint32_t version, kind;
  char metric[32];
  uint64_t seq_len, count, train_tokens, shard_size;
  uint32_t shard_crc, reserved;
};
static_assert(sizeof(header) == 88);

// The corpus an index belongs to: what every header carries and every open compares.
struct corpus_id {
  uint64_t seq_len, count, train_tokens, shard_size;
  uint32_t shard_crc;
};

void check_window(const token_shard& shard, std::size_t train_tokens, int seq_len) {
  if (seq_len < 1)
    fail("sample metrics for {}: seq_len {} must be >= 1", shard.path().string(), seq_len);
  if (train_tokens > shard.size())
    fail("sample metrics for {}: train_tokens {} exceeds the shard's {} tokens",
         shard.path().string(), train_tokens, shard.size());
}

corpus_id corpus_of(const token_shard& shard, std::size_t train_tokens, int seq_len) {
  check_window(shard, train_tokens, seq_len);
  std::size_t size = 0;
  const uint32_t crc = crc32_file(shard.path(), &size);
  return {static_cast<uint64_t>(seq_len), sample_count(train_tokens, seq_len), train_tokens, size,
          crc};
}

void check_metric_name(std::string_view m) {
  const bool ok = !m.empty() && m.size() < 32 && std::all_of(m.begin(), m.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
  if (!ok) fail("metric name '{}': expected 1-31 characters of [a-z0-9_]", m);
}

// Runs f(part, begin, end) on min(threads, n) contiguous ranges of [0, n), one std::thread
// each; threads = 0 means hardware_concurrency. Returns the number of ranges.
std::size_t range_count(std::size_t n, unsigned threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  return std::max<std::size_t>(1, std::min<std::size_t>(threads, n));
}
template <class F>
void parallel_ranges(std::size_t n, unsigned threads, F f) {
  const std::size_t t = range_count(n, threads);
  std::vector<std::thread> pool;
  pool.reserve(t);
  for (std::size_t k = 0; k < t; ++k)
    pool.emplace_back([&f, k, n, t] { f(k, n * k / t, n * (k + 1) / t); });
  for (auto& th : pool) th.join();
}

// Unigram counts over the train head, [vocab]; counted per thread range then added (integers, so
// the result does not depend on the split). zf::error naming the shard for an id out of vocab.
std::vector<uint64_t> unigram_counts(const token_shard& shard, std::size_t train_tokens,
                                     unsigned threads) {
  const std::size_t vocab = shard.vocab_size();
  const std::size_t t = range_count(train_tokens, threads);
  std::vector<std::vector<uint64_t>> local(t);
  std::vector<std::size_t> bad(t, SIZE_MAX);  // first out-of-vocab position per range
  parallel_ranges(train_tokens, threads, [&](std::size_t k, std::size_t b, std::size_t e) {
    auto& c = local[k];
    c.assign(vocab, 0);
    for (std::size_t i = b; i < e; ++i) {
      const auto id = static_cast<std::size_t>(shard[i]);
      if (id >= vocab) {
        bad[k] = i;
        return;
      }
      ++c[id];
    }
  });
  for (std::size_t k = 0; k < t; ++k)
    if (bad[k] != SIZE_MAX)
      fail("token shard {}: id {} at position {} is outside its vocab of {}", shard.path().string(),
           shard[bad[k]], bad[k], vocab);
  std::vector<uint64_t> total(vocab, 0);
  for (const auto& c : local)
    for (std::size_t v = 0; v < c.size(); ++v) total[v] += c[v];
  return total;
}

void put_file(const std::filesystem::path& p, const header& h, const void* data, std::size_t n) {
  std::vector<char> bytes(sizeof h + n);
  std::memcpy(bytes.data(), &h, sizeof h);
  if (n) std::memcpy(bytes.data() + sizeof h, data, n);
  write_file_atomic(p, bytes.data(), bytes.size());
}

// Maps `p` read-only and checks its header against the expected corpus, metric and kind; the
// data (count * 8 bytes) follows the header.
mapped_file map_checked(const std::filesystem::path& p, std::string_view metric, uint32_t kind,
                        const corpus_id& want) {
  mapped_file f = mapped_file::open(p, "metric index", sizeof(header));
  const char* m = f.data();
  const std::size_t len = f.size();
  {
    header h;
    std::memcpy(&h, m, sizeof h);
    if (std::memcmp(h.magic, k_magic, 8) != 0)
      fail("{} is not a metric index (bad magic)", p.string());
    if (h.version != k_version)
      fail("metric index {}: unsupported version {} (this build reads {})", p.string(), h.version,
           k_version);
    if (h.kind != kind)
      fail("metric index {}: holds kind {}, expected {} ({})", p.string(), h.kind, kind,
           kind == k_kind_values ? "values" : "order");
    const std::string name(h.metric, strnlen(h.metric, sizeof h.metric));
    if (name != metric)
      fail("metric index {} holds metric '{}', not '{}'", p.string(), name, metric);
    if (h.shard_size != want.shard_size || h.shard_crc != want.shard_crc)
      fail(
          "metric index {} is {} (corpus file of {} bytes, crc32 {:08x}; now {} bytes, crc32 "
          "{:08x})",
          p.string(), k_rebuild, h.shard_size, h.shard_crc, want.shard_size, want.shard_crc);
    if (h.train_tokens != want.train_tokens)
      fail("metric index {} is {} (train_tokens {}, now {})", p.string(), k_rebuild, h.train_tokens,
           want.train_tokens);
    if (h.seq_len != want.seq_len)
      fail("metric index {} is {} (seq_len {}, now {})", p.string(), k_rebuild, h.seq_len,
           want.seq_len);
    if (h.count != want.count)
      fail("metric index {} holds {} samples, expected {}", p.string(), h.count, want.count);
    // compared by division: a forged count must not overflow the check
    if ((len - sizeof(header)) % 8 != 0 || (len - sizeof(header)) / 8 != h.count)
      fail("metric index {} is truncated or padded: header says {} samples ({} bytes), file has {}",
           p.string(), h.count, sizeof(header) + h.count * 8, len);
  }
  return f;
}

}  // namespace

std::size_t sample_count(std::size_t train_tokens, int seq_len) {
  if (seq_len < 1) fail("sample_count: seq_len {} must be >= 1", seq_len);
  return train_tokens < 1 ? 0 : (train_tokens - 1) / static_cast<std::size_t>(seq_len);
}

std::vector<double> vocab_rarity(const token_shard& shard, std::size_t train_tokens, int seq_len,
                                 unsigned threads) {
  check_window(shard, train_tokens, seq_len);
  const std::size_t n = sample_count(train_tokens, seq_len);
  std::vector<double> out(n);
  if (n == 0) return out;
  const auto counts = unigram_counts(shard, train_tokens, threads);
  // -log p per id, [vocab]; ids absent from the train head never occur in a sample.
  std::vector<double> nlp(counts.size(), 0.0);
  const double total = static_cast<double>(train_tokens);
  for (std::size_t v = 0; v < counts.size(); ++v)
    if (counts[v]) nlp[v] = -std::log(static_cast<double>(counts[v]) / total);
  const auto len = static_cast<std::size_t>(seq_len) + 1;
  parallel_ranges(n, threads, [&](std::size_t, std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      double sum = 0;
      const std::size_t start = i * static_cast<std::size_t>(seq_len);
      for (std::size_t j = 0; j < len; ++j) sum += nlp[static_cast<std::size_t>(shard[start + j])];
      out[i] = sum / static_cast<double>(len);
    }
  });
  return out;
}

std::vector<double> read_custom_metric(const std::filesystem::path& file, std::size_t expected) {
  const std::string text = read_text_file(file);
  std::vector<double> out;
  std::size_t line = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line;
    std::string_view s(text.data() + pos, end - pos);
    pos = end + 1;
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    double v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size())
      fail("custom metric file {} line {}: '{}' is not a number", file.string(), line, s);
    if (!std::isfinite(v))
      fail("custom metric file {} line {}: '{}' is not a finite number", file.string(), line, s);
    out.push_back(v);
  }
  if (out.size() != expected)
    fail("custom metric file {}: expected {} samples (one value per line), got {}", file.string(),
         expected, out.size());
  return out;
}

std::vector<uint64_t> argsort_values(std::span<const double> values) {
  std::vector<uint64_t> ids(values.size());
  std::iota(ids.begin(), ids.end(), uint64_t{0});
  std::sort(ids.begin(), ids.end(), [&](uint64_t a, uint64_t b) {
    return values[a] < values[b] || (values[a] == values[b] && a < b);
  });
  return ids;
}

void write_metric_index(const std::filesystem::path& dir, std::string_view metric,
                        const token_shard& shard, std::size_t train_tokens, int seq_len,
                        std::span<const double> values) {
  check_metric_name(metric);
  const corpus_id c = corpus_of(shard, train_tokens, seq_len);
  if (values.size() != c.count)
    fail("metric {} for {}: {} values, expected {} samples", metric, shard.path().string(),
         values.size(), c.count);
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      fail("metric {} for {}: value of sample {} is not finite", metric, shard.path().string(), i);
  std::filesystem::create_directories(dir);
  header h{};
  std::memcpy(h.magic, k_magic, 8);
  h.version = k_version;
  std::memcpy(h.metric, metric.data(), metric.size());
  h.seq_len = c.seq_len;
  h.count = c.count;
  h.train_tokens = c.train_tokens;
  h.shard_size = c.shard_size;
  h.shard_crc = c.shard_crc;
  const std::string m(metric);
  h.kind = k_kind_values;
  put_file(dir / (m + ".values"), h, values.data(), values.size() * 8);
  const auto order = argsort_values(values);
  h.kind = k_kind_order;
  put_file(dir / (m + ".order"), h, order.data(), order.size() * 8);
}

metric_index metric_index::open(const std::filesystem::path& dir, std::string_view metric,
                                const token_shard& shard, std::size_t train_tokens, int seq_len) {
  check_metric_name(metric);
  const corpus_id c = corpus_of(shard, train_tokens, seq_len);
  const std::string m(metric);
  metric_index x;
  x.metric_ = m;
  x.count_ = c.count;
  x.values_map_ = map_checked(dir / (m + ".values"), metric, k_kind_values, c);
  const auto order_path = dir / (m + ".order");
  x.order_map_ = map_checked(order_path, metric, k_kind_order, c);
  x.values_ = reinterpret_cast<const double*>(x.values_map_.data() + sizeof(header));
  x.order_ = reinterpret_cast<const uint64_t*>(x.order_map_.data() + sizeof(header));
  // The order must be the argsort of these values: ids in range, strictly increasing by
  // (value, id), which also makes it a permutation. O(count), no allocation.
  for (std::size_t k = 0; k < x.count_; ++k) {
    const uint64_t id = x.order_[k];
    bool ok = id < x.count_ && std::isfinite(x.values_[id]);
    if (ok && k > 0) {
      const uint64_t prev = x.order_[k - 1];
      const double a = x.values_[prev], b = x.values_[id];
      ok = a < b || (a == b && prev < id);
    }
    if (!ok)
      fail("metric index {}: entry {} (sample {}) breaks the ascending order of {}.values",
           order_path.string(), k, id, m);
  }
  return x;
}

}  // namespace zf::storage
