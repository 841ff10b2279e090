#include "runtime/cluster/job_spec.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <set>

#include "runtime/core/error.hpp"

namespace zf::cluster {
namespace {

constexpr std::size_t max_args = 256;
constexpr std::size_t max_arg_bytes = 4096;
constexpr std::size_t min_token_chars = 16;
constexpr const char* shell_metachars = ";&|`$<>\\";

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// `s` in double quotes for a message: control characters (and '"', '\') escaped, so a logged
// refusal can neither forge log lines nor hide what it refused; long values cut to 80 bytes.
std::string quoted(const std::string& s) {
  std::string q = "\"";
  const std::size_t n = std::min<std::size_t>(s.size(), 80);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f)
      q += fmt::format("\\x{:02x}", c);
    else if (c == '"' || c == '\\')
      q += std::string("\\") + char(c);
    else
      q += char(c);
  }
  if (n < s.size()) q += "...";
  return q + "\"";
}

// One "HOST:PORT" or "[V6]:PORT"; `what` names the entry in messages. Ports lo..65535.
node_addr parse_addr(const std::string& entry, const std::string& what, int lo) {
  const std::string hint = " (expected HOST:PORT, or [IPv6]:PORT)";
  node_addr a;
  std::string port;
  if (entry.starts_with('[')) {
    const auto close = entry.find(']');
    if (close == std::string::npos) fail("{} {}: no closing ']'{}", what, quoted(entry), hint);
    a.host = entry.substr(1, close - 1);
    in6_addr v6{};
    if (a.host.empty()) fail("{} {}: empty host{}", what, quoted(entry), hint);
    if (::inet_pton(AF_INET6, a.host.c_str(), &v6) != 1)
      fail("{} {}: {} inside [] is not an IPv6 address{}", what, quoted(entry), quoted(a.host),
           hint);
    if (close + 1 >= entry.size() || entry[close + 1] != ':')
      fail("{} {}: no port after ']'{}", what, quoted(entry), hint);
    port = entry.substr(close + 2);
  } else {
    const auto colon = entry.rfind(':');
    if (colon == std::string::npos) fail("{} {}: no port{}", what, quoted(entry), hint);
    a.host = entry.substr(0, colon);
    port = entry.substr(colon + 1);
    if (a.host.find(':') != std::string::npos)
      fail("{} {}: an IPv6 address needs brackets, e.g. \"[::1]:7000\"", what, quoted(entry));
    if (a.host.empty()) fail("{} {}: empty host{}", what, quoted(entry), hint);
    if (a.host.find_first_of(" \t[]/,") != std::string::npos)
      fail("{} {}: {} is not a host name or address{}", what, quoted(entry), quoted(a.host), hint);
  }
  if (port.empty()) fail("{} {}: no port{}", what, quoted(entry), hint);
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), a.port);
  if (ec != std::errc() || p != port.data() + port.size() || a.port < lo || a.port > 65535)
    fail("{} {}: port {} is not a number in {}..65535", what, quoted(entry), quoted(port), lo);
  return a;
}

}  // namespace

std::string node_addr::text() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::vector<node_addr> parse_nodes(const std::string& list) {
  std::vector<node_addr> out;
  if (trim(list).empty()) fail("node list is empty (expected HOST:PORT,HOST:PORT,...)");
  std::set<std::pair<std::string, int>> seen;
  std::size_t start = 0;
  for (int i = 1;; ++i) {
    const auto comma = list.find(',', start);
    const std::string entry =
        trim(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    const std::string what = fmt::format("node list entry {}", i);
    if (entry.empty()) fail("{} is empty (in {})", what, quoted(list));
    node_addr a = parse_addr(entry, what, 1);
    if (!seen.insert({a.host, a.port}).second)
      fail("{} {}: {} is listed twice", what, quoted(entry), a.text());
    out.push_back(std::move(a));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

node_addr parse_listen(const std::string& text) {
  const std::string entry = trim(text);
  if (entry.empty()) fail("listen address is empty (expected HOST:PORT, or [IPv6]:PORT)");
  if (entry.find(',') != std::string::npos)
    fail("listen address {}: one HOST:PORT only", quoted(entry));
  return parse_addr(entry, "listen address", 0);
}

std::string read_token_file(const std::string& path) {
  const std::string what = "token file " + quoted(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block
  if (fd < 0) fail("{}: cannot open: {}", what, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", what, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", what);
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    fail(
        "{} can be read or written by others than its owner (mode {:04o}): a token others can "
        "read is no secret; run `chmod 600 {}`",
        what, st.st_mode & 07777, path);
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      fail("{}: cannot read: {}", what, std::strerror(err));
    }
    if (n == 0) break;
    text.append(buf, std::size_t(n));
    if (text.size() > 65536) {
      ::close(fd);
      fail("{}: longer than 64 KiB, not a token", what);
    }
  }
  ::close(fd);
  while (!text.empty() && std::strchr(" \t\r\n", text.back()) != nullptr) text.pop_back();
  if (text.empty()) fail("{} is empty", what);
  if (text.size() < min_token_chars)
    fail("{} holds {} characters: a token needs at least {}", what, text.size(), min_token_chars);
  return text;
}

bool secret_equal(const std::string& a, const std::string& b) {
  // Every byte of the longer string is visited whatever the content: only the lengths (not
  // secret) decide how long this takes.
  const std::size_t n = std::max(a.size(), b.size());
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < n; ++i) {
    const auto x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const auto y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff = diff | static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

const std::vector<std::string>& allowed_subcommands() {
  static const std::vector<std::string> subs{"train"};
  return subs;
}

void check_launch_args(const std::vector<std::string>& args) {
  const auto& subs = allowed_subcommands();
  std::string sub_list;
  for (const auto& s : subs) sub_list += (sub_list.empty() ? "" : ", ") + s;
  if (args.empty())
    fail("launch request: no arguments (expected a subcommand: {}): refused", sub_list);
  if (args.size() > max_args)
    fail("launch request: {} arguments, at most {}: refused", args.size(), max_args);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() > max_arg_bytes)
      fail("launch request: argument {} {} is {} bytes, at most {}: refused", i, quoted(a),
           a.size(), max_arg_bytes);
    for (const char ch : a) {
      const auto c = static_cast<unsigned char>(ch);
      if (c < 0x20 || c == 0x7f)
        fail("launch request: argument {} {} holds the control character 0x{:02x}: refused", i,
             quoted(a), c);
      if (std::strchr(shell_metachars, ch) != nullptr)
        fail("launch request: argument {} {} holds the shell metacharacter '{}': refused", i,
             quoted(a), ch);
    }
  }
  if (std::find(subs.begin(), subs.end(), args[0]) == subs.end())
    fail("launch request: argument 0 {} is not a subcommand an agent may start ({}): refused",
         quoted(args[0]), sub_list);
}

std::vector<rank_slot> plan_ranks(int nodes, int nproc_per_node) {
  if (nodes < 1) fail("rank plan: no nodes (expected at least 1, got {})", nodes);
  if (nproc_per_node < 1)
    fail("rank plan: processes per node must be at least 1, got {}", nproc_per_node);
  if (static_cast<long long>(nodes) * nproc_per_node > 65536)
    fail("rank plan: {} nodes x {} processes is more than 65536 ranks", nodes, nproc_per_node);
  std::vector<rank_slot> out;
  out.reserve(std::size_t(nodes) * std::size_t(nproc_per_node));
  for (int n = 0; n < nodes; ++n)
    for (int l = 0; l < nproc_per_node; ++l) out.push_back({n * nproc_per_node + l, l, n});
  return out;
}

std::vector<std::pair<std::string, std::string>> rank_env(
    const rank_slot& r, int world, int nproc_per_node, const std::string& master_host,
    int master_port, const std::string& job_secret, const std::string& node_host) {
  return {{"RANK", std::to_string(r.rank)},
          {"LOCAL_RANK", std::to_string(r.local_rank)},
          {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_WORLD_SIZE", std::to_string(nproc_per_node)},
          {"NODE_RANK", std::to_string(r.node)},
          {"MASTER_ADDR", master_host},
          {"MASTER_PORT", std::to_string(master_port)},
          {"ZF_JOB_SECRET", job_secret},
          {"ZF_IFACE_ADDR", node_host}};
}

}  // namespace zf::cluster

namespace zf::cluster {

std::optional<injected_fault> injected_fault_for(int rank, const char* spec, const char* attempt) {
  if (!spec || !*spec) return std::nullopt;
  if (attempt && *attempt && std::string_view(attempt) != "1") return std::nullopt;
  const std::string s = spec;
  const auto a = s.find(':'), b = a == std::string::npos ? a : s.find(':', a + 1);
  int r = -1;
  injected_fault f;
  bool ok = b != std::string::npos;
  if (ok) {
    auto num = [](std::string_view v, int& out) {
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
      return ec == std::errc() && p == v.data() + v.size();
    };
    const std::string_view sv = s;
    const std::string_view code = sv.substr(b + 1);
    ok = num(sv.substr(0, a), r) && num(sv.substr(a + 1, b - a - 1), f.step) && f.step >= 1 &&
         (code == "kill" ? (f.code = -1, true) : num(code, f.code) && f.code >= 0 && f.code < 256);
  }
  if (!ok) fail("environment ZF_FAULT_EXIT={}: expected RANK:STEP:CODE (CODE 0-255 or kill)", s);
  if (r != rank) return std::nullopt;
  return f;
}

}  // namespace zf::cluster

namespace zf::cluster {

std::vector<std::string> attempt_args(const std::vector<std::string>& args, int attempt) {
  if (attempt == 1) return args;
  std::vector<std::string> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--resume") {
      ++i;  // and its value
      continue;
    }
    if (args[i].starts_with("--resume=")) continue;
    out.push_back(args[i]);
  }
  out.insert(out.end(), {"--resume", "auto"});
  return out;
}

}  // namespace zf::cluster
