#include "runtime/core/launch.hpp"

#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include "runtime/core/error.hpp"

namespace zf {
namespace {

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  int x = 0;
  auto [p, ec] = std::from_chars(v, v + std::char_traits<char>::length(v), x);
  if (ec != std::errc() || *p != '\0' || x < lo || x > hi)
    fail("environment {}={}: expected an integer in {}..{}", name, v, lo, hi);
  return x;
}

}  // namespace

process_env read_process_env() {
  process_env e;
  e.present = std::getenv("WORLD_SIZE") != nullptr;
  if (!e.present) return e;
  e.world = env_int("WORLD_SIZE", 1, 1, 65536);
  e.rank = env_int("RANK", -1, 0, 65535);
  if (e.rank < 0) fail("environment WORLD_SIZE is set but RANK is not");
  if (e.rank >= e.world) fail("environment RANK={} must be below WORLD_SIZE={}", e.rank, e.world);
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0, 65535);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  if (const char* s = std::getenv("ZF_JOB_SECRET"); s) e.job_secret = s;
  e.master_port = env_int("MASTER_PORT", 0, 1, 65535);
  if (e.world > 1 && e.master_port == 0)
    fail("environment MASTER_PORT must be set when WORLD_SIZE > 1");
  const bool loopback = e.master_addr == "localhost" || e.master_addr.starts_with("127.");
  if (const char* i = std::getenv("ZF_IFACE_ADDR"); i && *i) {
    e.iface_addr = i;
  } else if (loopback) {
    e.iface_addr = "127.0.0.1";
  } else {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    e.iface_addr = host;
  }
  return e;
}

}  // namespace zf
