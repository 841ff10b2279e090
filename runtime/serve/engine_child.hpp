#pragma once
// The engine process a trainer starts (actors/engine_client, issue: remote engines): what is
// plain process and file work rather than messaging.
//   - A private rendezvous folder under work_dir (.engine-<pid>-<random>, mode 0700), removed
//     once the child has joined (or when this object goes).
//   - The child `executable engine-host --rendezvous DIR` with a random secret in its environment
//     (ZF_ENGINE_SECRET), which every control message then carries.
//   - Its port, polled from the rendezvous store until it appears: zf::error naming the engine
//     and its process when the child ends first or does not start in time.
//   - The words for how it ended: "<name> (process P) <exit status>".
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "runtime/core/process.hpp"

namespace zf::serve {

class engine_child {
 public:
  // executable "": this program (child_process).
  engine_child(const std::string& executable, const std::filesystem::path& work_dir,
               std::string name);
  ~engine_child();  // the folder removed if still there; the child killed (child_process)
  engine_child(const engine_child&) = delete;
  engine_child& operator=(const engine_child&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  const std::string& secret() const { return secret_; }
  child_process& process() { return *child_; }

  // The port the child published: poll() returns it as text, or "" while it is not there yet
  // (the caller reads the rendezvous store; each poll may wait a little).
  uint16_t wait_port(const std::function<std::string()>& poll, std::chrono::seconds timeout);
  void remove_dir();
  // "<name> (process P) <how it ended>" once the child has ended, else nullopt.
  std::optional<std::string> ended();
  // ended(), waiting up to 1 s for the exit status (it trails a closed connection), else
  // "<name> (process P): <other>".
  std::string gone_or(const std::string& other);

 private:
  std::string name_;
  std::filesystem::path dir_;
  std::string secret_;
  std::unique_ptr<child_process> child_;
};

}  // namespace zf::serve
