// libFuzzer target: a Hugging Face tokenizer.json -> tokenizer::load_hf, as `--tokenizer DIR`
// and HF model folders load it. The input is written to tokenizer.json in a scratch folder; a
// part after the separator "\0tokenizer_config.json\0" (if any) becomes the tokenizer_config.json
// beside it (its add_bos_token / bos_token decide the special tokens). A tokenizer that loads
// then encodes a short text (a fixed one that names common special tokens, and the input's first
// 64 bytes): every id must be inside the vocabulary and decode without throwing, and its special
// tokens (prefix, suffix, BOS, EOS, eot) must be ids of the vocabulary too.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.hpp"
#include "runtime/core/error.hpp"
#include "runtime/text/tokenizer.hpp"

namespace {

void check_ids(const zf::tokenizer& tok, const std::vector<int>& ids, const char* what) {
  const int v = tok.vocab_size();
  for (int id : ids) ZF_FUZZ_CHECK(id >= 0 && id < v, "%s id %d outside [0, %d)", what, id, v);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto& dir = zf::fuzz::scratch_dir("tokenizer");
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  static constexpr std::string_view sep("\0tokenizer_config.json\0", 23);
  const std::size_t cut = in.find(sep);
  zf::fuzz::write_file(dir / "tokenizer.json", in.substr(0, cut));
  std::error_code ec;
  if (cut == std::string_view::npos)
    std::filesystem::remove(dir / "tokenizer_config.json", ec);
  else
    zf::fuzz::write_file(dir / "tokenizer_config.json", in.substr(cut + sep.size()));
  try {
    const zf::tokenizer tok = zf::tokenizer::load_hf(dir);
    const int v = tok.vocab_size();
    ZF_FUZZ_CHECK(v > 0, "vocab_size %d", v);
    check_ids(tok, tok.prompt_specials().prefix, "prefix");
    check_ids(tok, tok.prompt_specials().suffix, "suffix");
    for (int id : {tok.eot(), tok.bos_token_id(), tok.eos_token_id()})
      ZF_FUZZ_CHECK(id >= -1 && id < v, "special id %d outside [-1, %d)", id, v);
    for (std::string_view text :
         {std::string_view("Hello, world! <|endoftext|> 123 \xc3\xa9t\xc3\xa9 \xff\xfe  x"),
          in.substr(0, 64)}) {
      const std::vector<int> ids = tok.encode_with_special(text);
      check_ids(tok, ids, "encode");
      (void)tok.decode(ids);
      check_ids(tok, tok.encode_prompt(text), "encode_prompt");
    }
  } catch (const zf::error&) {
    // refused with a message naming the file
  }
  return 0;
}
