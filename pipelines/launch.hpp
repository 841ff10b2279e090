#pragma once
// `zeroflow launch --nproc N -- <subcommand args>`: starts N copies of this binary on this host
// with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set (what torchrun, mpirun
// wrappers and Slurm scripts set), forwards Ctrl-C, and if one rank dies, stops the others and
// says which rank died and how.
#include <string>
#include <vector>

namespace zf {

// Returns the exit code for the launcher: 0 when every rank exited 0.
int launch_local(int nproc, int master_port, const std::vector<std::string>& args);

}  // namespace zf
