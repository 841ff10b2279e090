#pragma once
// The pretraining pipeline (sampler, train, checkpoint, quiet monitor) as the training tests run
// it, and run options that write into a test's folder without printing a sample.
#include <filesystem>

#include "pipelines/pipeline.hpp"

namespace zf::testing {

inline run_options quiet_opts(const std::filesystem::path& out) {
  run_options o;
  o.out = out;
  o.print_sample = false;
  return o;
}

inline pipeline quiet_pretrain(const run_config& c) {
  pipeline p(c);
  p.add(stages::sampler{})
      .add(stages::train{})
      .add(stages::checkpoint{})
      .add(stages::monitor{.quiet = true});
  return p;
}

}  // namespace zf::testing
