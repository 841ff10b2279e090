#pragma once
// Checkpoints, format 2: one format that saves fast (every rank writes its own bytes, in
// parallel, through io_uring) and loads anywhere (any world size or ZeRO stage reads exactly the
// fragments its slice needs, with no conversion step).
//
// ROOT/step-000123/ holds
//   rank-00000.bin ...  one data file per writer. A writer owning the slices [begin, end) of
//                       the flat parameter range (runtime/model/model.hpp param_layout) writes its
//                       fp32 parameters of each slice, then exp_avg, then exp_avg_sq, each
//                       section starting at a 4 KiB-aligned offset (zero padding between).
//   manifest            Cap'n Proto flat array (storage/manifest.capnp), itself CRC-checked:
//                       format version, step, world size and ZeRO stage written with, the run
//                       config (TOML text), trainer state (JSON text), the data files and their
//                       exact sizes, and for every parameter its name, shape, dtype ("F32") and
//                       fragments {kind, file, byte offset, byte length, first element within
//                       the tensor, CRC-32, dtype of the stored bytes}. A tensor split across
//                       writers (or slices) has one fragment per slice and kind.
// Commit is atomic: step-000123.tmp/ gets the data files (each fsynced) and the manifest, the
// folder is fsynced and renamed, the root fsynced, then ROOT/latest (a one-line file naming the
// folder) replaced by rename. A crash at any point leaves the previous checkpoint and `latest`
// intact; a step folder without .tmp is complete. Pruned folders are renamed to step-X.del
// before removal, so a crash while pruning never leaves a half-deleted step-X.
// Loading verifies the CRC of every fragment it reads before any value reaches the caller, and
// refuses a fragment stored in a dtype other than the layout's (fp32 today) by name. The commit
// protocol of several processes writing one step is storage/checkpoint_commit.hpp.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/dtype.hpp"
#include "runtime/model/model.hpp"

namespace zf::storage {

inline constexpr int k_checkpoint_version = 2;

// Fragment kinds: which flat buffer the bytes belong to, or which part of a quantized tensor
// (storage/quant_checkpoint.hpp).
inline constexpr int kind_param = 0, kind_exp_avg = 1, kind_exp_avg_sq = 2;
inline constexpr int kind_qdata = 3, kind_qscales = 4, kind_qzeros = 5, kind_lorc_a = 6,
                     kind_lorc_b = 7, k_kinds = 8;
const char* kind_name(int kind);  // "param", "exp_avg", "exp_avg_sq", "qdata", ...

// A quantized matrix's description in the manifest (manifest.capnp Quant); format "" for a
// float tensor.
struct quant_entry {
  std::string format;  // kernels/quant.hpp qformat name: int8, int4, fp6_e3m2, ...
  int k = 0, n = 0, group = 0, rank = 0;
  bool asym = false, act_int8 = false;
  bool empty() const { return format.empty(); }
  bool operator==(const quant_entry&) const = default;
};

// ---- one writer: save_checkpoint ----------------------------------------------------------

struct checkpoint_view {  // what a save needs: pointers into live or snapshot buffers
  int step = 0;           // optimizer steps completed
  std::string config_toml;
  const param_layout* layout = nullptr;
  const float* params = nullptr;      // [layout->total]
  const float* exp_avg = nullptr;     // may be null (weights-only checkpoint)
  const float* exp_avg_sq = nullptr;  //
  nlohmann::json state;               // trainer/sampler state to resume exactly
};

// Writes ROOT/step-NNNNNN with one writer (rank-00000.bin, world 1, ZeRO stage 0) and moves
// ROOT/latest to it; removes the oldest step folders beyond `keep`. Returns the committed
// folder. Never overwrites an existing step folder: one equal to what it wrote (a retry) is kept,
// another is refused. Moments are saved when both are given. On a zf::error (a full disk) the
// partial step-NNNNNN.tmp is removed and the previous checkpoint is untouched.
std::filesystem::path save_checkpoint(const std::filesystem::path& root, const checkpoint_view& c,
                                      int keep = 3);

// ---- many writers: begin_checkpoint, write_shard (per rank, concurrently), commit -----------

struct shard_data {  // pointers to this writer's slice [begin, end) of the flat range
  std::size_t begin = 0, end = 0;
  const float* params = nullptr;      // params[0] is flat element `begin`
  const float* exp_avg = nullptr;     // may be null
  const float* exp_avg_sq = nullptr;  // may be null
};

struct fragment {
  std::string tensor;
  int kind = kind_param;
  std::string file;         // relative to the step folder
  uint64_t offset = 0;      // bytes into file
  uint64_t length = 0;      // bytes
  uint64_t elem_begin = 0;  // first element within the tensor
  uint32_t crc32 = 0;
  zf::dtype dtype = zf::dtype::f32;  // encoding of the bytes (length = elements x its size)
};

struct write_options {
  std::size_t chunk_bytes = 8u << 20;  // bounce buffer size
  unsigned queue_depth = 4;            // writes in flight per writer
  bool direct = true;                  // O_DIRECT where the file system allows it
};

// Creates ROOT/step-NNNNNN.tmp (clearing a leftover one of a crashed write) and returns it.
// An existing ROOT/step-NNNNNN is decided at publish_checkpoint, once what this write holds is
// known: kept if equal (a retry), else refused.
std::filesystem::path begin_checkpoint(const std::filesystem::path& root, int step);
// Removes tmp_dir (best effort) after a write that failed: on a full disk the partial data of a
// failed checkpoint would otherwise keep it full until that step is written again.
void abandon_checkpoint(const std::filesystem::path& tmp_dir) noexcept;
// ROOT/step-NNNNNN.tmp, the folder begin_checkpoint creates (for writers that did not create it).
std::filesystem::path checkpoint_tmp_dir(const std::filesystem::path& root, int step);

// Writes rank-RRRRR.bin into tmp_dir: the slice's parameters and whichever moments are given,
// through io_uring (O_DIRECT for the 4 KiB-aligned part, buffered for the tail), then fsyncs it.
// The CRC of each fragment is computed from memory while copying into the write buffers (no
// re-read). Safe to call from several threads at once for different ranks. An empty slice writes
// nothing and returns no fragments.
std::vector<fragment> write_shard(const std::filesystem::path& tmp_dir, int rank,
                                  const param_layout& layout, const shard_data& s,
                                  const write_options& o = {});
// The same for several slices in one file (a ZeRO rank owns one chunk of every region): the
// parameters of every slice, then every slice's exp_avg, then exp_avg_sq, each section 4 KiB
// aligned. Every slice must give the same kinds.
std::vector<fragment> write_shard(const std::filesystem::path& tmp_dir, int rank,
                                  const param_layout& layout, const std::vector<shard_data>& slices,
                                  const write_options& o = {});

// A tensor the manifest lists beyond the layout's float ones: a quantized matrix (which may
// stand for a layout tensor, whose fp32 values are then not stored, or be one of its own: the
// quantized head of a model whose head is tied to the embeddings).
struct quant_tensor {
  std::string name;
  std::vector<int64_t> shape;  // the float tensor's shape
  quant_entry quant;
};

struct manifest_info {
  int step = 0;
  int world = 1;
  int zero_stage = 0;
  std::string config_toml;
  nlohmann::json state;
  std::string quant_scheme = {}, quant_method = {};  // a quantized checkpoint's (else empty)
  std::vector<quant_tensor> quant = {};              // its quantized tensors
};

// Checks that `all` (every writer's fragments) covers each tensor of layout exactly (parameters
// always; each moment for every tensor or for none), writes the manifest, fsyncs, renames
// tmp_dir to its step folder, moves `latest`, prunes beyond `keep`. Returns the step folder.
// The two halves below, for a caller that has something to do between them.
std::filesystem::path commit_checkpoint(const std::filesystem::path& root,
                                        const std::filesystem::path& tmp_dir,
                                        const param_layout& layout,
                                        const std::vector<fragment>& all, const manifest_info& info,
                                        int keep);
// The coverage checks, then tmp_dir/manifest written and fsynced (tmp_dir too). Nothing is
// visible to readers yet: a crash now leaves a .tmp folder that no reader opens.
void write_manifest(const std::filesystem::path& root, const std::filesystem::path& tmp_dir,
                    const param_layout& layout, const std::vector<fragment>& all,
                    const manifest_info& info);
// The commit point: tmp_dir renamed to ROOT/step-NNNNNN, ROOT fsynced, `latest` moved to it,
// older folders pruned beyond keep. Returns the step folder. If ROOT/step-NNNNNN exists already
// (a commit that failed after its rename, retried), it is kept when its manifest equals
// tmp_dir's and it verifies (tmp_dir is dropped and the rest of the commit done), else refused
// naming it; it is never overwritten.
std::filesystem::path publish_checkpoint(const std::filesystem::path& root,
                                         const std::filesystem::path& tmp_dir, int step, int keep);

// ---- reading --------------------------------------------------------------------------------

struct tensor_entry {
  std::string name;
  std::string dtype;  // "F32", or a quantized tensor's format upper-cased ("INT4")
  std::vector<int64_t> shape;
  std::vector<fragment> fragments;  // by kind, then elem_begin
  quant_entry quant;                // a quantized tensor's format; empty for a float one
  std::size_t numel() const;
};

struct checkpoint_manifest {
  std::filesystem::path dir;  // the step folder
  int version = 0;
  int step = 0;
  int world = 1;
  int zero_stage = 0;
  std::string config_toml;
  nlohmann::json state;
  std::vector<std::pair<std::string, uint64_t>> files;  // name, exact bytes
  std::vector<tensor_entry> tensors;                    // in the writer's layout order
  std::string quant_scheme, quant_method;               // a quantized checkpoint's, else ""
  const tensor_entry* find(const std::string& name) const;
  bool has_kind(int kind) const;  // some tensor has fragments of this kind
  bool quantized() const { return !quant_scheme.empty(); }
};

// dir: a step folder, a root holding `latest`, the `latest` file itself, or a run folder holding
// checkpoints/latest. For a root the step folders are the truth and `latest` a hint: a write
// killed after it renamed step-N.tmp to step-N but before it moved `latest` (or before the first
// `latest` existed) left a complete step-N, and that newest folder whose manifest reads is the
// answer. A `latest` naming a missing or corrupt folder is still an error (said, not skipped).
std::filesystem::path resolve_checkpoint(const std::filesystem::path& dir);
// True if root holds a checkpoint resolve_checkpoint would find (`latest`, or a step folder).
bool has_checkpoint(const std::filesystem::path& root);
// The whole manifest (resolves dir). zf::error naming the manifest when it is missing, not a
// zeroflow manifest, another format version, or corrupt (bad CRC, malformed message).
checkpoint_manifest read_checkpoint_manifest(const std::filesystem::path& dir);

// The manifest file's envelope (ManifestFile: magic, format version, CRC-32 of the body): the
// bytes of a manifest file around an encoded Manifest message, as the writer makes them, and
// back (no checks beyond the message's framing). For tools and the fuzz target, which forge
// manifests without Cap'n Proto headers (that library stays in storage/).
std::string wrap_manifest_body(std::string_view body);
std::string manifest_body(std::string_view manifest_file);

struct loaded_checkpoint {
  std::filesystem::path dir;
  int step = 0;
  std::string config_toml;
  nlohmann::json state;
  std::vector<float> params, exp_avg,
      exp_avg_sq;  // flat, in the layout order; moments empty if absent
};

// Reads one fragment whole into dst (f.length bytes) after checking that its file is listed
// with its exact size and holds the fragment, and verifies its CRC; for readers of fragments
// that are not f32 parameters (storage/quant_checkpoint). zf::error naming the file and tensor.
void read_fragment_bytes(const checkpoint_manifest& m, const fragment& f, void* dst);

// Reads the manifest only (cheap): step, config, state.
loaded_checkpoint read_manifest(const std::filesystem::path& dir);
// Reads every tensor of layout (and both moments when the checkpoint has them), verifying the
// CRC of every fragment; zf::error names the file and parameter on a missing/truncated file,
// bad checksum or shape mismatch. These float loads (and load_range) refuse a quantized
// checkpoint by name: it serves and scores (storage/quant_checkpoint), it does not train.
loaded_checkpoint load_checkpoint(const std::filesystem::path& dir, const param_layout& layout);

// Reads [begin, end) of layout's flat range, whatever world wrote it, into the given buffers
// (each [end - begin] floats; null = skip that kind). Reads only the fragments that overlap the
// slice and verifies each one's CRC. zf::error naming file and parameter on a missing/truncated
// file, bad CRC, a tensor the checkpoint lacks or has with another shape/dtype, or a moment the
// checkpoint does not hold. Nothing is written to the outputs unless every fragment verified
// (fragments are staged in memory first).
void load_range(const std::filesystem::path& dir, const param_layout& layout, std::size_t begin,
                std::size_t end, float* params, float* exp_avg, float* exp_avg_sq);

struct load_stats {           // what a load cost, summed over the calls that share it
  uint64_t bytes_read = 0;    // fragment bytes read from the data files
  uint64_t bytes_staged = 0;  // of those, read into a staging buffer (not straight to place)
  uint64_t peak_staged = 0;   // largest staging memory held at once, bytes
};

struct range_options {
  // true: nothing reaches the outputs unless every fragment verified (all staged first).
  // false: a fragment wanted whole is read in place, a partial one staged alone and copied out
  // once its CRC verified, so staging never exceeds one fragment; for callers that own the
  // outputs and drop them on failure (a rank being loaded).
  bool all_or_nothing = true;
  load_stats* stats = nullptr;  // may be null
};

// load_range on a manifest already read: a loader reading many slices parses it once.
void load_range(const checkpoint_manifest& m, const param_layout& layout, std::size_t begin,
                std::size_t end, float* params, float* exp_avg, float* exp_avg_sq,
                const range_options& o = {});

struct verify_report {
  bool ok = false;
  std::vector<std::string> problems;
  int step = 0;
  std::size_t bytes = 0;  // data bytes checked
};

// Reads everything: the manifest, every data file (exists, exact size), every fragment's CRC,
// and every tensor fully covered by its fragments (parameters; each moment for all or none).
// Problems are listed, not thrown.
verify_report verify_checkpoint(const std::filesystem::path& dir);

// ---- Hugging Face interchange ---------------------------------------------------------------

// Writes the checkpoint's parameters to `file` (safetensors, Hugging Face GPT-2 names, F32) and
// a Hugging Face GPT-2 config.json next to it. Refuses to overwrite `file`, or a config.json
// with different content. Returns the config.json path.
std::filesystem::path export_safetensors(const std::filesystem::path& dir,
                                         const std::filesystem::path& file);
// Reads `file` (safetensors; F32/F16/BF16; names with or without "transformer.") and the
// config.json beside it into ROOT/step-000000 (weights only, `latest` set). Refuses a root that
// already holds checkpoints; shape mismatches name the tensor. Returns the step folder.
std::filesystem::path import_safetensors(const std::filesystem::path& file,
                                         const std::filesystem::path& root);

}  // namespace zf::storage
