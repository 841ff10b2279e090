#include "runtime/core/slurm_nodelist.hpp"

#include <cctype>
#include <charconv>
#include <cstdint>

#include "runtime/core/error.hpp"

namespace zf {
namespace {

constexpr size_t max_hosts = size_t{1} << 20;

[[noreturn]] void bad(std::string_view list, std::string_view what) {
  fail("Slurm node list \"{}\": {}", list, what);
}

bool all_digits(std::string_view s) {
  if (s.empty() || s.size() > 18) return false;  // 18 digits fit an int64 without overflow
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

uint64_t to_u64(std::string_view s) {
  uint64_t x = 0;
  std::from_chars(s.data(), s.data() + s.size(), x);
  return x;
}

// "1-3,7" (the inside of one bracket group) -> {"1","2","3","7"}; a range's numbers are padded
// with zeros to its lower bound's width ("01-10" -> 01..10), as Slurm does.
std::vector<std::string> expand_group(std::string_view list, std::string_view inside) {
  std::vector<std::string> out;
  size_t at = 0;
  while (true) {
    const size_t comma = inside.find(',', at);
    const std::string_view item =
        inside.substr(at, comma == std::string_view::npos ? std::string_view::npos : comma - at);
    const size_t dash = item.find('-');
    const std::string_view lo = item.substr(0, dash);
    const std::string_view hi = dash == std::string_view::npos ? lo : item.substr(dash + 1);
    if (!all_digits(lo) || !all_digits(hi))
      bad(list, fmt::format("range \"[{}]\": expected numbers or ranges such as 1-3,7 (got \"{}\")",
                            inside, item));
    const uint64_t a = to_u64(lo), b = to_u64(hi);
    if (a > b) bad(list, fmt::format("reversed range \"{}\" (the lower bound comes first)", item));
    if (b - a >= max_hosts || out.size() + (b - a) >= max_hosts)
      bad(list, fmt::format("range \"{}\" expands to more than {} names", item, max_hosts));
    for (uint64_t i = a; i <= b; ++i) out.push_back(fmt::format("{:0{}}", i, lo.size()));
    if (comma == std::string_view::npos) break;
    at = comma + 1;
  }
  return out;
}

// One name of the list ("rack[1-2]-n[1-2]", brackets already known to balance) -> its hosts,
// appended to `hosts`: the first group varies slowest.
void expand_name(std::string_view list, std::string_view name, std::vector<std::string>& hosts) {
  std::vector<std::string> partial{""};
  size_t at = 0;
  while (at < name.size()) {
    const size_t open = name.find('[', at);
    const std::string_view text = name.substr(at, open - at);
    for (auto& p : partial) p += text;
    if (open == std::string_view::npos) break;
    const size_t close = name.find(']', open);
    const auto group = expand_group(list, name.substr(open + 1, close - open - 1));
    if (partial.size() * group.size() + hosts.size() > max_hosts)
      bad(list, fmt::format("\"{}\" expands to more than {} names", name, max_hosts));
    std::vector<std::string> next;
    next.reserve(partial.size() * group.size());
    for (auto& p : partial)
      for (auto& g : group) next.push_back(p + g);
    partial = std::move(next);
    at = close + 1;
  }
  for (auto& p : partial) hosts.push_back(std::move(p));
}

}  // namespace

std::vector<std::string> expand_slurm_nodelist(std::string_view list) {
  if (list.empty()) bad(list, "empty (expected names such as n[1-3,7])");
  std::vector<std::string> hosts;
  size_t start = 0;
  int depth = 0;
  // Split at the commas outside brackets, checking the brackets balance on the way.
  for (size_t i = 0; i <= list.size(); ++i) {
    const char c = i < list.size() ? list[i] : ',';
    if (std::isspace(static_cast<unsigned char>(c)))
      bad(list, fmt::format("white space at offset {}", i));
    if (c == '[') {
      if (depth++) bad(list, fmt::format("'[' inside a bracket group at offset {}", i));
    } else if (c == ']') {
      if (!depth--) bad(list, fmt::format("']' without its '[' at offset {}", i));
    } else if (c == ',' && depth == 0) {
      if (i == start) bad(list, fmt::format("empty name at offset {}", i));
      expand_name(list, list.substr(start, i - start), hosts);
      start = i + 1;
    }
    if (i == list.size() && depth) bad(list, "'[' without its ']'");
  }
  return hosts;
}

}  // namespace zf
