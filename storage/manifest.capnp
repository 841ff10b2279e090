@0x861ba2b62806805e;
# The manifest of a format-v2 checkpoint (storage/checkpoint.hpp), stored as one Cap'n Proto
# flat-array message in step-NNNNNN/manifest. The file's root is ManifestFile: a CRC-32 of
# `body` and `body` itself, which is a second flat-array message whose root is Manifest, so a
# damaged manifest is detected before any of its offsets is trusted.

struct ManifestFile {
  magic @0 :Text;     # "zeroflow-checkpoint"
  version @1 :UInt32; # 2
  crc32 @2 :UInt32;   # zlib CRC-32 of body
  body @3 :Data;      # flat array: Manifest
}

struct Manifest {
  step @0 :Int64;
  world @1 :Int32;        # writers (ranks) it was written with
  zeroStage @2 :Int32;    # ZeRO stage it was written with
  configToml @3 :Text;    # the run configuration (runtime/core/config.hpp to_toml)
  stateJson @4 :Text;     # trainer / sampler state, JSON text
  files @5 :List(File);
  tensors @6 :List(Tensor);

  struct File {
    name @0 :Text;        # relative to the step folder: rank-00000.bin, ...
    bytes @1 :UInt64;     # exact size
  }

  enum Kind {
    param @0;
    expAvg @1;
    expAvgSq @2;
    # a quantized tensor's parts (storage/quant_checkpoint.hpp)
    qdata @3;             # packed codes, u8: [n, packed_row_bytes(format, k)]
    qscales @4;           # f32: [n, k / group]
    qzeros @5;            # u8: [n, k / group], asymmetric formats only
    lorcA @6;             # f32: [k, rank], LoRC's low-rank correction
    lorcB @7;             # f32: [rank, n]
  }

  # How a fragment's bytes encode its elements. Parameters and moments are f32 (bf16 and f16
  # are named so that a manifest saying them is refused by name instead of misread); u8 holds a
  # quantized tensor's packed codes and zero points.
  enum Dtype {
    f32 @0;
    bf16 @1;
    f16 @2;
    u8 @3;
  }

  struct Fragment {
    kind @0 :Kind;
    file @1 :Text;
    offset @2 :UInt64;    # byte offset in file
    length @3 :UInt64;    # bytes (elements x the dtype's size)
    elemBegin @4 :UInt64; # first element within the tensor (row-major, flattened)
    crc32 @5 :UInt32;     # zlib CRC-32 of the fragment's bytes
    dtype @6 :Dtype = f32; # element encoding; manifests from before this field read as f32
  }

  struct Tensor {
    name @0 :Text;        # Hugging Face GPT-2 name: wte.weight, h.0.attn.c_attn.weight, ...
    dtype @1 :Text;       # the layout's type of the tensor: "F32"
    shape @2 :List(Int64);
    fragments @3 :List(Fragment);
    quant @4 :Quant;      # set for a quantized tensor (its dtype then names the format)
  }

  # A quantized matrix (kernels/quant.hpp): n output rows of k inputs, one scale (and zero
  # point) per group of inputs. Its parts are fragments of kinds qdata, qscales, qzeros, lorcA,
  # lorcB; it has no param fragments (the fp32 values are not stored).
  struct Quant {
    format @0 :Text;      # int8 | int4 | fp8_e4m3 | fp8_e5m2 | fp6_e3m2 | fp4_e2m1; "" = float
    k @1 :Int32;          # inputs
    n @2 :Int32;          # outputs
    group @3 :Int32;      # inputs per scale
    asym @4 :Bool;        # zero points stored
    actInt8 @5 :Bool;     # activations quantized per token at run time (W8A8)
    rank @6 :Int32;       # LoRC rank, 0 = none
  }

  quantScheme @7 :Text;   # "" = a float checkpoint; else w8a8 | w4a16 | fp8 | fp6 | fp4 ...
  quantMethod @8 :Text;   # rtn | gptq, with +lorcR and +lkd
}
