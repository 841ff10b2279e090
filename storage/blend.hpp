#pragma once
// Data blending (issue 13, data.sources): several corpora mixed by weight into ONE token shard,
// which storage::dataset then reads like any corpus. Each source is split as dataset splits a
// shard (a train head, then a validation tail of size_t(n * val_fraction) tokens); the blend's
// train part is made of train heads only and its validation part of validation tails only, and
// the parts are sized so that dataset's split of the blend falls exactly between them: no
// source's held-out text is ever trained on.
//
// Within a part, each source contributes a share proportional to its weight, in chunks of
// blend_chunk tokens (a source's last partial chunk is dropped; the very last piece taken may be
// cut short so the part has exactly its size): a source whose share exceeds its chunks cycles
// through them (upsampling), one whose share is smaller takes a subset (subsampling), both in a
// seeded shuffled order; the part's chunks are then interleaved in a seeded shuffled order.
// Shuffles are Fisher-Yates over splitmix64 with a rejection-sampled bounded draw, so a blend is
// the same bytes with any standard library. The blend's size is the sum of the sources' sizes,
// so weights redistribute the data rather than grow it.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/core/config.hpp"
#include "storage/dataset.hpp"

namespace zf {
class tokenizer;
}

namespace zf::storage {

inline constexpr std::size_t blend_chunk = 1024;  // tokens per chunk

// Each source through prepare_corpus (a cached .tok each), then the blend, cached as
// data_dir/cache/blend-<hash>.tok with blend-<hash>.json beside it (per source: path, shard,
// weight, and per part tokens taken, unique tokens, repeats). The hash covers every source
// shard's size and CRC, the weights, val_fraction, blend_seed and tokenizer_id: a blend is reused
// while it opens, has the expected size and none of these changed, and rebuilt otherwise.
// zf::error naming data.sources and the source for: no sources, a weight <= 0 (or not finite), a
// source that cannot be prepared (missing, not text, ...), one too small for one chunk in a part,
// sources made for different vocabulary sizes.
std::filesystem::path prepare_blend(const std::vector<data_source>& sources, double val_fraction,
                                    int64_t blend_seed, const std::filesystem::path& data_dir,
                                    const tokenizer& tok, const std::string& tokenizer_id = "",
                                    const corpus_checks& checks = {});

// The run's token shard: the blend of d.sources when there are any, else d.corpus alone.
std::filesystem::path prepare_data(const data_config& d, const std::filesystem::path& data_dir,
                                   const tokenizer& tok, const std::string& tokenizer_id = "",
                                   const corpus_checks& checks = {});

}  // namespace zf::storage
