#pragma once
// The process-group environment every common launcher sets (torchrun, mpirun wrappers, Slurm
// scripts, `zeroflow launch`): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
#include <string>

namespace zf {

struct process_env {
  bool present = false;  // WORLD_SIZE was set
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  // Address this process's data plane binds to: 127.0.0.1 when the master is on loopback,
  // else $ZF_IFACE_ADDR or this host's name.
  std::string iface_addr;
  // ZF_JOB_SECRET: what every rank presents to the rendezvous, so that a stranger who reaches
  // the port can neither join the job nor read its rank table ("" = none; `zeroflow launch`
  // always sets a random one).
  std::string job_secret;
};

// zf::error naming the variable on a malformed or inconsistent value.
process_env read_process_env();

}  // namespace zf
