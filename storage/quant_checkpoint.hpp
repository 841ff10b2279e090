#pragma once
// Quantized checkpoints (issue 14): a format-2 checkpoint (storage/checkpoint.hpp: the same
// manifest, CRCs, atomic commit, `latest`) whose manifest names a scheme and method and lists
// each quantized matrix with its format (manifest.capnp Quant) and parts instead of fp32 values:
//   rank-00000.bin   the float tensors (embeddings, norms, biases), f32 param fragments
//   quant-00000.bin  each quantized matrix's parts, 64-byte aligned: qdata (u8 packed codes
//                    [n, packed_row_bytes(format, k)]), qscales (f32 [n, k/group]), qzeros (u8,
//                    asymmetric formats), lorc_a (f32 [k, rank]) and lorc_b (f32 [rank, n])
// The quantized matrices are the blocks' four projections under their layout names
// (h.0.attn.c_attn.weight, layers.0.mlp.down_proj.weight, ...) and the LM head as
// lm_head.weight (also when the head is tied to the embeddings, which stay f32). Serving,
// generating and scoring load one like any checkpoint (storage/lm_loader); training and the
// float loads (load_checkpoint, load_range) refuse it by name.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/core/dtype.hpp"
#include "runtime/model/lm_weights.hpp"
#include "storage/checkpoint.hpp"

namespace zf::storage {

// What one kind of a tensor's fragments must cover.
struct stored_part {
  int kind = kind_param;
  zf::dtype type = zf::dtype::f32;
  uint64_t elems = 0;
};

// The parts a tensor's fragments must cover exactly: a float tensor (q null or empty) its
// parameters (the shape's element count) and each moment present[kind] says the checkpoint
// holds; a quantized one qdata, qscales, qzeros (asym) and the LoRC factors (rank > 0). zf::error
// "`what`: ..." for a quantized entry whose format is unknown or whose k, n, group or rank the
// format cannot hold.
std::vector<stored_part> stored_parts(const quant_entry* q, const std::vector<int64_t>& shape,
                                      const bool present[3], const std::string& what);

// The manifest names of the quantized matrices of a model: [4 * n_layer] block projections
// (qkv, o, up, down per layer), then the head ("lm_head.weight").
std::vector<std::string> quant_tensor_names(const model_spec& spec);

// Writes ROOT/step-NNNNNN from w (which must carry w.quant) and moves `latest` to it: every
// float tensor without a quantized form as f32, every quantized matrix's parts, the scheme and
// method in the manifest. config_toml and state are recorded as given (the source run's
// configuration, where the weights came from). Refuses a ROOT that already holds checkpoints.
// Returns the step folder.
std::filesystem::path save_quantized_checkpoint(const std::filesystem::path& root, int step,
                                                const std::string& config_toml,
                                                const nlohmann::json& state, const lm_weights& w);

// The weights of a quantized checkpoint (m.quantized()) for spec (its config's model), named
// `name`: float tensors into the canonical layout, quantized matrices attached (attach_quant).
// Every fragment's CRC is verified; zf::error naming the manifest or file for a part that is
// missing, of the wrong size or format, or corrupt.
lm_weights load_quantized_weights(const checkpoint_manifest& m, const model_spec& spec,
                                  const std::string& name);

}  // namespace zf::storage
