#include "storage/dataset.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "runtime/core/error.hpp"
#include "runtime/text/text_stream.hpp"
#include "runtime/text/tokenizer.hpp"
#include "storage/fs_util.hpp"

namespace fs = std::filesystem;

namespace zf::storage {

namespace {

// A folder of corpus files (a sharded corpus): every .txt and .tok directly in it, in name order,
// each prepared as a corpus of its own (text tokenized once and cached), then concatenated into
// one cached shard named by the folder and by each part's name, size and modification time.
fs::path prepare_corpus_dir(const fs::path& dir, const fs::path& data_dir, const tokenizer& tok,
                            const std::string& tokenizer_id, const corpus_checks& checks) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto ext = e.path().extension();
    if (e.is_regular_file() && (ext == ".txt" || ext == ".tok")) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) fail("data.corpus: {} holds no .txt or .tok file", dir.string());
  std::string key = tokenizer_id;
  for (const auto& f : files)
    key += fmt::format("|{}:{}:{}", f.filename().string(), fs::file_size(f),
                       fs::last_write_time(f).time_since_epoch().count());
  const fs::path cache =
      data_dir / "cache" /
      fmt::format("{}-dir-{:08x}.tok", dir.filename().string(), crc32_of(key.data(), key.size()));
  if (fs::exists(cache)) {
    try {
      token_shard::open(cache);
      return cache;
    } catch (const error&) {  // a damaged cache is rebuilt
    }
  }
  std::vector<int> ids;
  uint32_t vocab = 0;
  for (const auto& f : files) {
    const auto shard =
        token_shard::open(prepare_corpus(f.string(), data_dir, tok, tokenizer_id, checks));
    if (vocab && shard.vocab_size() != vocab)
      fail("data.corpus: {} has ids for a vocabulary of {}, the folder's first part {}", f.string(),
           shard.vocab_size(), vocab);
    vocab = shard.vocab_size();
    const std::size_t at = ids.size();
    ids.resize(at + shard.size());
    shard.read(0, shard.size(), ids.data() + at);
  }
  std::error_code ec;
  fs::create_directories(cache.parent_path(), ec);
  if (ec) fail("cannot create {}: {}", cache.parent_path().string(), ec.message());
  write_token_shard(cache, ids, vocab);
  return cache;
}

}  // namespace

fs::path prepare_corpus(const std::string& corpus, const fs::path& data_dir, const tokenizer& tok,
                        const std::string& tokenizer_id, const corpus_checks& checks) {
  if (!corpus.empty() && fs::is_directory(corpus))
    return prepare_corpus_dir(corpus, data_dir, tok, tokenizer_id, checks);
  // The corpora scripts/setup fetches, by name: data_dir/<name>.txt.
  const bool fetched = corpus == "moby-dick" || corpus == "kjv-bible" || corpus == "sotu";
  fs::path text = fetched ? data_dir / (corpus + ".txt") : fs::path(corpus);
  if (text.extension() == ".tok") {
    token_shard::open(text);  // validates now, with the file's name in any message
    return text;
  }
  if (!fs::exists(text))
    fail("data.corpus: cannot read {}{}", text.string(),
         fetched ? " (run scripts/setup to fetch the embedded corpora)" : "");
  std::string content = read_text_file(text);
  if (content.empty()) fail("data.corpus: {} is empty", text.string());
  // Checked on every run, cached or not: the warning belongs with each run that trains on it.
  const std::string warning =
      check_training_text(content, text.string(), checks.max_invalid_utf8,
                          "Set data.max_invalid_utf8 = 1 to train on it anyway.");
  if (!warning.empty() && checks.warn) checks.warn(warning);
  uint32_t crc = crc32_of(content.data(), content.size());
  // The cache is keyed by the text and the tokenizer: another tokenizer must not reuse ids.
  const std::string tag = tokenizer_id.empty() ? "" : "-" + tokenizer_id;
  fs::path cache =
      data_dir / "cache" /
      fmt::format("{}-{}-{:08x}{}.tok", text.stem().string(), content.size(), crc, tag);
  if (fs::exists(cache)) {
    try {
      token_shard::open(cache);
      return cache;
    } catch (const error&) {  // a damaged cache is rebuilt, never trusted
    }
  }
  std::error_code ec;
  fs::create_directories(cache.parent_path(), ec);
  if (ec) fail("cannot create {}: {}", cache.parent_path().string(), ec.message());
  std::vector<int> ids = tok.encode(content);
  write_token_shard(cache, ids, static_cast<uint32_t>(tok.vocab_size()));
  return cache;
}

dataset::dataset(token_shard shard, double val_fraction, int seq_len)
    : shard_(std::move(shard)), t_(seq_len) {
  const std::size_t n = shard_.size();
  std::size_t val = static_cast<std::size_t>(n * val_fraction);
  if (val_fraction > 0 && val < std::size_t(seq_len) + 1) val = seq_len + 1;
  if (n < val + seq_len + 2)
    fail("corpus {} has {} tokens: too few for train.seq_len {} with a validation split of {}",
         shard_.path().string(), n, seq_len, val_fraction);
  train_end_ = n - val;
}

void dataset::fill_window(std::size_t start, int t, int row, batch& out) const {
  int* in = out.inputs.data() + std::size_t(row) * t;
  int* tg = out.targets.data() + std::size_t(row) * t;
  for (int i = 0; i < t; ++i) {
    in[i] = shard_[start + i];
    tg[i] = shard_[start + i + 1];
  }
}

void dataset::fill_train_rows(uint64_t seed, int64_t index, int row_begin, int rows,
                              batch& out) const {
  out.index = index;
  out.b = rows;
  out.t = t_;
  out.inputs.resize(std::size_t(rows) * t_);
  out.targets.resize(std::size_t(rows) * t_);
  for (int r = 0; r < rows; ++r)
    fill_window(random_start(seed, index, row_begin + r, t_), t_, r, out);
}

std::size_t dataset::random_start(uint64_t seed, int64_t index, int64_t row, int t) const {
  std::uniform_int_distribution<std::size_t> pick(0, train_end_ - t - 1);
  std::seed_seq seq{uint32_t(seed), uint32_t(seed >> 32), uint32_t(index), uint32_t(index >> 32),
                    uint32_t(row)};
  std::mt19937_64 rng(seq);
  return pick(rng);
}

void dataset::fill_val(int64_t index, int b, batch& out) const {
  if (val_tokens() == 0)
    fail("corpus {} has no validation split (data.val_fraction = 0)", shard_.path().string());
  out.index = index;
  out.b = b;
  out.t = t_;
  out.inputs.resize(std::size_t(b) * t_);
  out.targets.resize(std::size_t(b) * t_);
  const std::size_t windows = (val_tokens() - 1) / t_;
  for (int r = 0; r < b; ++r) {
    std::size_t w = (std::size_t(index) * b + r) % std::max<std::size_t>(windows, 1);
    std::size_t start = train_end_ + w * t_;
    if (start + t_ + 1 > shard_.size()) start = shard_.size() - t_ - 1;
    fill_window(start, t_, r, out);
  }
}

}  // namespace zf::storage
