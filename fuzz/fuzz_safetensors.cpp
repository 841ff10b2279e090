// libFuzzer target: a whole .safetensors file (8-byte header length, JSON header, data section)
// -> safetensors_file::from_bytes, the same validation safetensors_file::open runs on a mapped
// file, on a heap copy sized exactly (so AddressSanitizer sees a read one byte past the end).
// Every tensor it accepts is then read the way loaders do: find/at by name, to_f32 or to_i32 (a
// dtype they refuse throws zf::error, which is fine), and each byte of its span touched.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz/fuzz_util.hpp"
#include "runtime/core/error.hpp"
#include "storage/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto* b = reinterpret_cast<const std::byte*>(data);
  std::vector<std::byte> bytes(b, b + size);
  try {
    const auto f = zf::storage::safetensors_file::from_bytes(std::move(bytes), "fuzz.safetensors");
    unsigned sum = 0;
    for (const auto& t : f.tensors()) {
      ZF_FUZZ_CHECK(f.find(t.name) == &f.at(t.name), "find and at disagree on '%s'",
                    t.name.c_str());
      const std::size_t es = zf::storage::dtype_size(t.dtype);
      std::size_t numel = 1;
      for (int64_t d : t.shape) numel *= static_cast<std::size_t>(d);
      ZF_FUZZ_CHECK(es != 0 && t.nbytes == numel * es, "'%s': %zu bytes for %zu x %zu",
                    t.name.c_str(), t.nbytes, numel, es);
      for (std::size_t i = 0; i < t.nbytes; ++i) sum += static_cast<unsigned>(t.data[i]);
      try {
        sum += static_cast<unsigned>(f.to_f32(t.name).size());
      } catch (const zf::error&) {
      }
      try {
        sum += static_cast<unsigned>(f.to_i32(t.name).size());
      } catch (const zf::error&) {
      }
    }
    zf::fuzz::keep(sum + f.metadata().size());
  } catch (const zf::error&) {
    // refused, with a message: what a bad file should get
  }
  return 0;
}
