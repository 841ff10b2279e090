#include "runtime/core/launch.hpp"

#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include "runtime/core/error.hpp"
#include "runtime/core/slurm_nodelist.hpp"

namespace zf {
namespace {

using getenv_t = std::function<const char*(const char*)>;

// The environment as one launcher's variables: empty values count as unset, and every error
// names the variable, its value and the launcher that set it.
struct env_reader {
  const getenv_t& get;
  std::string_view who;  // "torchrun", "mpirun", "slurm"

  const char* str(const char* name) const {
    const char* v = get(name);
    return v && *v ? v : nullptr;
  }
  // $name as an integer in lo..hi; `fallback` when unset.
  int integer(const char* name, int fallback, int lo, int hi) const {
    const char* v = str(name);
    if (!v) return fallback;
    int x = 0;
    auto [p, ec] = std::from_chars(v, v + std::char_traits<char>::length(v), x);
    if (ec != std::errc() || *p != '\0' || x < lo || x > hi)
      fail("environment {}={} ({}): expected an integer in {}..{}", name, v, who, lo, hi);
    return x;
  }
  // $name as a required integer, given that $other was set.
  int required(const char* name, int lo, int hi, const char* other) const {
    const int x = integer(name, -1, lo, hi);
    if (x < 0) fail("environment {} is set but {} is not ({})", other, name, who);
    return x;
  }
  uint64_t id(const char* name) const {
    const char* v = str(name);
    uint64_t x = 0;
    auto [p, ec] = std::from_chars(v, v + std::char_traits<char>::length(v), x);
    if (ec != std::errc() || *p != '\0')
      fail("environment {}={} ({}): expected a job or step number", name, v, who);
    return x;
  }
};

void check_rank(const env_reader& r, const process_env& e, const char* rank_var,
                const char* world_var) {
  if (e.rank >= e.world)
    fail("environment {}={} must be below {}={} ({})", rank_var, e.rank, world_var, e.world, r.who);
}

// torchrun, `zeroflow launch`, node agents: WORLD_SIZE is set.
void read_torchrun(const env_reader& r, process_env& e) {
  e.world = r.integer("WORLD_SIZE", 1, 1, 65536);
  e.rank = r.required("RANK", 0, 65535, "WORLD_SIZE");
  check_rank(r, e, "RANK", "WORLD_SIZE");
  e.local_rank = r.integer("LOCAL_RANK", e.rank, 0, 65535);
  e.node = r.integer("GROUP_RANK", -1, 0, 65535);
  if (const char* a = r.str("MASTER_ADDR")) e.master_addr = a;
  e.master_port = r.integer("MASTER_PORT", 0, 1, 65535);
  if (e.world > 1 && e.master_port == 0)
    fail("environment MASTER_PORT must be set when WORLD_SIZE > 1");
}

// Open MPI's mpirun: OMPI_COMM_WORLD_SIZE is set.
void read_mpirun(const env_reader& r, process_env& e) {
  e.world = r.integer("OMPI_COMM_WORLD_SIZE", 1, 1, 65536);
  e.rank = r.required("OMPI_COMM_WORLD_RANK", 0, 65535, "OMPI_COMM_WORLD_SIZE");
  check_rank(r, e, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE");
  e.local_rank = r.integer("OMPI_COMM_WORLD_LOCAL_RANK", e.rank, 0, 65535);
  const int local_size = r.integer("OMPI_COMM_WORLD_LOCAL_SIZE", -1, 1, 65536);
  if (const char* a = r.str("MASTER_ADDR")) {
    e.master_addr = a;
  } else if (local_size == e.world) {
    e.master_addr = "127.0.0.1";  // every rank on this host
  } else {
    fail(
        "mpirun: the {} ranks span several hosts (OMPI_COMM_WORLD_LOCAL_SIZE={}): pass the host of "
        "rank 0 as `mpirun -x MASTER_ADDR=HOST ...` (an address every host reaches)",
        e.world, local_size < 0 ? std::string("unset") : std::to_string(local_size));
  }
  e.master_port = r.integer("MASTER_PORT", 0, 1, 65535);
  if (e.master_port == 0) {
    const char* job = r.str("OMPI_MCA_ess_base_jobid");
    if (!job) job = r.str("PMIX_NAMESPACE");
    if (job) {
      e.master_port = derived_port_text(job);
    } else if (e.world > 1) {
      fail(
          "mpirun: neither OMPI_MCA_ess_base_jobid nor PMIX_NAMESPACE is set to derive the "
          "rendezvous port from: pass `mpirun -x MASTER_PORT=PORT ...`");
    }
  }
}

// srun: SLURM_PROCID and SLURM_STEP_ID are set (a batch script has no step id).
void read_slurm(const env_reader& r, process_env& e) {
  const char* step_var = r.str("SLURM_STEP_ID") ? "SLURM_STEP_ID" : "SLURM_STEPID";
  const char* world_var = r.str("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
  e.world = r.required(world_var, 1, 65536, "SLURM_PROCID");
  e.rank = r.integer("SLURM_PROCID", 0, 0, 65535);
  check_rank(r, e, "SLURM_PROCID", world_var);
  e.local_rank = r.integer("SLURM_LOCALID", e.rank, 0, 65535);
  e.node = r.integer("SLURM_NODEID", -1, 0, 65535);
  if (const char* a = r.str("MASTER_ADDR")) {
    e.master_addr = a;
  } else {
    const char* list_var =
        r.str("SLURM_STEP_NODELIST") ? "SLURM_STEP_NODELIST" : "SLURM_JOB_NODELIST";
    const char* list = r.str(list_var);
    if (!list)
      fail(
          "slurm: neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is set to find the "
          "master (rank 0's node) in: set MASTER_ADDR");
    try {
      e.master_addr = expand_slurm_nodelist(list).front();
    } catch (const error& x) {
      fail("environment {}: {}", list_var, x.what());
    }
  }
  e.master_port = r.integer("MASTER_PORT", 0, 1, 65535);
  if (e.master_port == 0) {
    if (r.str("SLURM_JOB_ID"))
      e.master_port = derived_port_slurm(r.id("SLURM_JOB_ID"), r.id(step_var));
    else if (e.world > 1)
      fail("slurm: SLURM_JOB_ID is not set to derive the rendezvous port from: set MASTER_PORT");
  }
}

}  // namespace

int derived_port_slurm(uint64_t job_id, uint64_t step_id) {
  return 20000 + static_cast<int>((job_id % 40000 * 97 + step_id) % 40000);
}

int derived_port_text(std::string_view job_id) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a, 64 bits
  for (unsigned char c : job_id) h = (h ^ c) * 1099511628211ull;
  return 20000 + static_cast<int>(h % 40000);
}

process_env read_process_env(const getenv_t& getenv_fn) {
  process_env e;
  env_reader probe{getenv_fn, ""};
  if (probe.str("WORLD_SIZE")) {
    e.launcher = "torchrun";
    read_torchrun(env_reader{getenv_fn, "torchrun"}, e);
  } else if (probe.str("OMPI_COMM_WORLD_SIZE")) {
    e.launcher = "mpirun";
    read_mpirun(env_reader{getenv_fn, "mpirun"}, e);
  } else if (probe.str("SLURM_PROCID") &&
             (probe.str("SLURM_STEP_ID") || probe.str("SLURM_STEPID"))) {
    e.launcher = "slurm";
    read_slurm(env_reader{getenv_fn, "slurm"}, e);
  } else {
    return e;
  }
  e.present = true;
  if (const char* s = getenv_fn("ZF_JOB_SECRET"); s) e.job_secret = s;
  const bool loopback = e.master_addr == "localhost" || e.master_addr.starts_with("127.");
  if (const char* i = probe.str("ZF_IFACE_ADDR")) {
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

process_env read_process_env() {
  return read_process_env([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace zf
