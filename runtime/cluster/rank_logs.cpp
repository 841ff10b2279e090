#include "runtime/cluster/rank_logs.hpp"

#include <fmt/format.h>

#include <filesystem>

namespace zf::cluster {

rank_logs::rank_logs(std::string dir, std::function<void(const std::string&)> print)
    : dir_(std::move(dir)), print_(std::move(print)) {}

std::ofstream& rank_logs::file(int rank) {
  auto it = files_.find(rank);
  if (it == files_.end()) {
    std::filesystem::create_directories(dir_);
    const auto path = std::filesystem::path(dir_) / fmt::format("rank-{}.log", rank);
    it = files_.emplace(rank, std::ofstream(path, std::ios::app)).first;
  }
  return it->second;
}

void rank_logs::output(int rank, std::string_view text) {
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t nl = text.find('\n', at);
    if (nl == std::string_view::npos) nl = text.size();
    print_(fmt::format("[rank {}] {}", rank, text.substr(at, nl - at)));
    at = nl + 1;
  }
  if (dir_.empty()) return;
  auto& f = file(rank);
  f << text;
  f.flush();
}

void rank_logs::note(int rank, std::string_view line) {
  if (dir_.empty()) return;
  auto& f = file(rank);
  f << line << '\n';
  f.flush();
}

}  // namespace zf::cluster
