// libFuzzer target: a whole .gguf file (magic, version, counts, metadata, tensor infos, data)
// -> gguf_file::from_bytes, the same validation gguf_file::open runs on a mapped file, on a heap
// copy sized exactly (so AddressSanitizer sees a read one byte past the end). Every key it
// accepts is read through the typed getters (a type they refuse throws zf::error, which is fine),
// every tensor found by name, its size checked against its type and dims and each byte of its
// span touched. Then the file is written back with write_gguf (into the scratch folder) and read
// again: the metadata and the tensors (names, types, dims, bytes) must come back equal.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz/fuzz_util.hpp"
#include "runtime/core/error.hpp"
#include "storage/gguf.hpp"

namespace {

// Reads every value the way loaders do; returns something computed from them.
std::size_t read_values(const zf::storage::gguf_file& f) {
  std::size_t sum = 0;
  for (const auto& kv : f.metadata()) {
    ZF_FUZZ_CHECK(f.find_value(kv.key) == &kv.value, "find_value disagrees on '%s'",
                  kv.key.c_str());
    const auto guard = [&](auto&& get) {
      try {
        get();
      } catch (const zf::error&) {
        ++sum;
      }
    };
    guard([&] { sum += f.get_string(kv.key).size(); });
    guard([&] { sum += static_cast<std::size_t>(f.get_int(kv.key)); });
    guard([&] { sum += static_cast<std::size_t>(f.get_float(kv.key) != 0); });
    guard([&] { sum += f.get_bool(kv.key); });
    guard([&] { sum += f.get_strings(kv.key).size(); });
    guard([&] { sum += f.get_ints(kv.key).size(); });
    guard([&] { sum += f.get_floats(kv.key).size(); });
    sum += kv.value.size();
  }
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  using zf::storage::gguf_file;
  const auto* b = reinterpret_cast<const std::byte*>(data);
  std::vector<std::byte> bytes(b, b + size);
  try {
    const auto f = gguf_file::from_bytes(std::move(bytes), "fuzz.gguf");
    std::size_t sum = read_values(f);
    bool long_name = false;
    std::vector<zf::storage::gguf_write> out;
    for (const auto& t : f.tensors()) {
      ZF_FUZZ_CHECK(f.find(t.name) == &f.at(t.name), "find and at disagree on '%s'",
                    t.name.c_str());
      const auto n = zf::storage::ggml_nbytes(t.type, t.dims);
      ZF_FUZZ_CHECK(n && *n == t.nbytes, "'%s': %zu bytes for its type and dims", t.name.c_str(),
                    t.nbytes);
      ZF_FUZZ_CHECK(t.offset % f.alignment() == 0, "'%s': offset %llu not aligned", t.name.c_str(),
                    static_cast<unsigned long long>(t.offset));
      ZF_FUZZ_CHECK(f.data_offset() + t.offset + t.nbytes <= size, "'%s' ends past the file",
                    t.name.c_str());
      for (std::size_t i = 0; i < t.nbytes; ++i) sum += static_cast<unsigned>(t.data[i]);
      long_name = long_name || t.name.size() > 63;  // readable, but the writer keeps to ggml's 63
      out.push_back({t.name, t.type, t.dims, t.data, t.nbytes});
    }
    zf::fuzz::keep(sum);

    // Round trip, unless the copy would be large: every tensor is padded to the alignment.
    if (long_name || f.alignment() > 4096) return 0;
    const auto p = zf::fuzz::scratch_dir("gguf") / "copy.gguf";
    try {
      zf::storage::write_gguf(p, f.metadata(), out, f.alignment());
      const auto g = gguf_file::open(p);
      ZF_FUZZ_CHECK(g.alignment() == f.alignment(), "alignment %u came back as %u", f.alignment(),
                    g.alignment());
      ZF_FUZZ_CHECK(g.metadata() == f.metadata(), "metadata changed in the round trip");
      ZF_FUZZ_CHECK(g.tensors().size() == f.tensors().size(), "tensor count changed");
      for (std::size_t i = 0; i < f.tensors().size(); ++i) {
        const auto& a = f.tensors()[i];
        const auto& c = g.tensors()[i];
        ZF_FUZZ_CHECK(a.name == c.name && a.type == c.type && a.dims == c.dims &&
                          a.nbytes == c.nbytes &&
                          (a.nbytes == 0 || std::memcmp(a.data, c.data, a.nbytes) == 0),
                      "tensor '%s' changed in the round trip", a.name.c_str());
      }
    } catch (const zf::error& e) {
      // What the reader accepted, the writer must write and the reader read back.
      ZF_FUZZ_CHECK(false, "round trip refused: %s", e.what());
    }
  } catch (const zf::error&) {
    // refused, with a message: what a bad file should get
  }
  return 0;
}
