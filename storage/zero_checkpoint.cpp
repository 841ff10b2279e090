#include "storage/zero_checkpoint.hpp"

#include <exception>
#include <thread>

namespace zf::storage {

checkpoint_part part_of(const zero_snapshot& s) {
  checkpoint_part p;
  p.file_id = s.rank;
  std::size_t at = 0;
  for (auto& sl : s.slices) {
    p.slices.push_back({sl.flat_begin, sl.flat_begin + sl.len, s.params.data() + at,
                        s.exp_avg.data() + at, s.exp_avg_sq.data() + at});
    at += sl.len;
  }
  return p;
}

load_stats load_rank_state(zero_rank& z, const checkpoint_manifest& m, const param_layout& layout) {
  load_stats stats;
  const range_options o{.all_or_nothing = false, .stats = &stats};  // z is dropped on failure
  const bool moments = m.has_kind(kind_exp_avg) && m.has_kind(kind_exp_avg_sq);
  z.load_state([&](std::size_t b, std::size_t e, float* p, float* em,
                   float* ev) { load_range(m, layout, b, e, p, em, ev, o); },
               moments);
  return stats;
}

void load_ranks(const std::vector<std::shared_ptr<zero_rank>>& ranks,
                const std::filesystem::path& dir, const param_layout& layout) {
  const checkpoint_manifest m = read_checkpoint_manifest(dir);
  std::vector<std::exception_ptr> errors(ranks.size());
  std::vector<std::thread> th;
  for (std::size_t i = 0; i < ranks.size(); ++i)
    th.emplace_back([&, i] {
      try {
        load_rank_state(*ranks[i], m, layout);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  for (auto& t : th) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace zf::storage
