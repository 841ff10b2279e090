// engine_child (engine_child.hpp): the remote engine's process, folder and port.
#include "runtime/serve/engine_child.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "runtime/core/error.hpp"

namespace zf::serve {
namespace fs = std::filesystem;

engine_child::engine_child(const std::string& executable, const fs::path& work_dir,
                           std::string name)
    : name_(std::move(name)),
      dir_(work_dir / fmt::format(".engine-{}-{}", ::getpid(), random_secret())),
      secret_(random_secret()) {
  fs::create_directories(dir_);
  fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace);  // 0700
  try {
    child_ = std::make_unique<child_process>(
        executable, std::vector<std::string>{"engine-host", "--rendezvous", dir_.string()},
        std::vector<std::pair<std::string, std::string>>{{"ZF_ENGINE_SECRET", secret_}});
  } catch (...) {
    remove_dir();
    throw;
  }
}

engine_child::~engine_child() {
  remove_dir();
}

void engine_child::remove_dir() {
  if (dir_.empty()) return;
  std::error_code ec;
  fs::remove_all(dir_, ec);
  dir_.clear();
}

uint16_t engine_child::wait_port(const std::function<std::string()>& poll,
                                 std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string port;
  while (port.empty()) {
    if (auto e = child_->exited())
      fail("{} (process {}) {} before it started", name_, child_->pid(), *e);
    if (std::chrono::steady_clock::now() > deadline)
      fail("{} (process {}) did not start within {} s", name_, child_->pid(), timeout.count());
    port = poll();
  }
  return static_cast<uint16_t>(std::stoi(port));
}

std::optional<std::string> engine_child::ended() {
  if (auto e = child_->exited()) return fmt::format("{} (process {}) {}", name_, child_->pid(), *e);
  return std::nullopt;
}

std::string engine_child::gone_or(const std::string& other) {
  for (int i = 0; i < 50; ++i) {
    if (auto e = ended()) return *e;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fmt::format("{} (process {}): {}", name_, child_->pid(), other);
}

}  // namespace zf::serve
