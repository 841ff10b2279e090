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
  }

  # How a fragment's bytes encode its elements. Only f32 is written and read today; the others
  # are named so that a manifest saying bf16 is refused by name instead of misread.
  enum Dtype {
    f32 @0;
    bf16 @1;
    f16 @2;
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
  }
}
