#pragma once
// Where this process sits in a process group, from the variables its launcher set. In order of
// precedence (the first found wins):
//   torchrun  WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT: torchrun, `zeroflow launch`,
//             zeroflow's node agents, or set by hand
//   mpirun    Open MPI's OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
//   slurm     SLURM_PROCID, SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), SLURM_LOCALID, SLURM_NODEID,
//             SLURM_STEP_NODELIST, read only inside a job step that srun started (SLURM_STEP_ID
//             set): a batch script also has SLURM_PROCID=0 and the job's SLURM_NTASKS, but it is
//             one process, not rank 0 of the job's tasks
// With mpirun and Slurm, MASTER_ADDR and MASTER_PORT still win when set; otherwise the master is
// 127.0.0.1 (mpirun on one host) or the step's first node (Slurm), and the port is derived from
// the job's id (derived_port_* below), so that every rank computes the same one.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace zf {

struct process_env {
  bool present = false;  // a launcher was found (launcher != "")
  // "torchrun" (explicit WORLD_SIZE/RANK), "mpirun", "slurm", or "" when none: for messages.
  std::string launcher;
  int rank = 0, world = 1, local_rank = 0;
  int node = -1;  // this host's index in the job: SLURM_NODEID, torchrun's GROUP_RANK; -1 unknown
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0 only for a one-rank group without MASTER_PORT
  // Address this process's data plane binds to: $ZF_IFACE_ADDR, else 127.0.0.1 when the master
  // is on loopback, else this host's name.
  std::string iface_addr;
  // ZF_JOB_SECRET: what every rank presents to the rendezvous, so that a stranger who reaches
  // the port can neither join the job nor read its rank table ("" = none; `zeroflow launch`
  // always sets a random one).
  std::string job_secret;
};

// zf::error naming the variable (and the launcher) on a malformed or inconsistent value.
// getenv_fn(name) -> value or nullptr; the overload without it reads the process environment.
process_env read_process_env(const std::function<const char*(const char*)>& getenv_fn);
process_env read_process_env();

// The rendezvous port when MASTER_PORT is not set, in 20000..59999:
//   Slurm:   20000 + (SLURM_JOB_ID * 97 + SLURM_STEP_ID) mod 40000
//            (97 is prime to 40000: consecutive jobs, and a job's first 97 steps, differ)
//   mpirun:  20000 + fnv1a64(job id text) mod 40000, the id from OMPI_MCA_ess_base_jobid,
//            else PMIX_NAMESPACE (the same on every rank of one mpirun)
int derived_port_slurm(uint64_t job_id, uint64_t step_id);
int derived_port_text(std::string_view job_id);

}  // namespace zf
