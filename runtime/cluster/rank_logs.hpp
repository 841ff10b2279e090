#pragma once
// What a launcher does with its ranks' output: every line printed as `[rank N] ...` and kept in
// dir/rank-N.log (opened once, appended to across attempts, flushed per write so that
// `tail -f` follows a running job).
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <string_view>

namespace zf::cluster {

class rank_logs {
 public:
  // dir "" = print only. The folder is created on the first write.
  rank_logs(std::string dir, std::function<void(const std::string&)> print);
  // text: whole lines (the last may lack its '\n'): printed prefixed and logged as is.
  void output(int rank, std::string_view text);
  // A line of the launcher's own for the rank's log only (an attempt's header).
  void note(int rank, std::string_view line);

 private:
  std::ofstream& file(int rank);
  std::string dir_;
  std::function<void(const std::string&)> print_;
  std::map<int, std::ofstream> files_;
};

}  // namespace zf::cluster
