// Rank discovery (runtime/core/launch.hpp) from a fake environment per launcher, and Slurm's
// node-list expansion (runtime/core/slurm_nodelist.hpp). The variable sets are the ones the real
// launchers set here (tests/cluster/ runs them for real).
#include <doctest/doctest.h>
#include <unistd.h>

#include <map>
#include <string>

#include "runtime/core/error.hpp"
#include "runtime/core/launch.hpp"
#include "runtime/core/slurm_nodelist.hpp"

namespace {

using env_map = std::map<std::string, std::string>;

zf::process_env read(const env_map& m) {
  return zf::read_process_env([&](const char* name) -> const char* {
    auto it = m.find(name);
    return it == m.end() ? nullptr : it->second.c_str();
  });
}

// The message of the zf::error read(m) throws ("" when it throws none).
std::string error_of(const env_map& m) {
  try {
    read(m);
  } catch (const zf::error& e) {
    return e.what();
  }
  return "";
}

std::string this_host() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

// Rank 1 of `srun -n 2` (job 1, step 0) on node "vm", as Slurm 22.05 set it.
env_map slurm_step() {
  return {{"SLURM_PROCID", "1"},         {"SLURM_NTASKS", "2"},
          {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_LOCALID", "1"},
          {"SLURM_NODEID", "0"},         {"SLURM_JOB_ID", "1"},
          {"SLURM_STEP_ID", "0"},        {"SLURM_STEPID", "0"},
          {"SLURM_JOB_NODELIST", "vm"},  {"SLURM_STEP_NODELIST", "vm"},
          {"SLURMD_NODENAME", "vm"},     {"SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"}};
}

// Rank 1 of `mpirun -n 2` (Open MPI 4.1.4) on one host.
env_map mpirun_two() {
  return {{"OMPI_COMM_WORLD_RANK", "1"},       {"OMPI_COMM_WORLD_SIZE", "2"},
          {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
          {"OMPI_COMM_WORLD_NODE_RANK", "1"},  {"OMPI_MCA_ess_base_jobid", "219283457"},
          {"PMIX_NAMESPACE", "219283457"},     {"PMIX_RANK", "1"}};
}

}  // namespace

TEST_CASE("launch env: nothing set is a single process") {
  auto e = read({});
  CHECK_FALSE(e.present);
  CHECK(e.launcher.empty());
  CHECK(e.world == 1);
  CHECK(e.rank == 0);
}

TEST_CASE("launch env: torchrun variables as zeroflow launch sets them") {
  auto e = read({{"RANK", "2"},
                 {"WORLD_SIZE", "4"},
                 {"LOCAL_RANK", "0"},
                 {"GROUP_RANK", "1"},
                 {"MASTER_ADDR", "127.0.0.1"},
                 {"MASTER_PORT", "29500"},
                 {"ZF_JOB_SECRET", "s3cret"}});
  CHECK(e.present);
  CHECK(e.launcher == "torchrun");
  CHECK(e.rank == 2);
  CHECK(e.world == 4);
  CHECK(e.local_rank == 0);
  CHECK(e.node == 1);
  CHECK(e.master_addr == "127.0.0.1");
  CHECK(e.master_port == 29500);
  CHECK(e.job_secret == "s3cret");
  CHECK(e.iface_addr == "127.0.0.1");
  // a master elsewhere: the data plane binds this host's name, or ZF_IFACE_ADDR
  env_map far{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "1"}};
  CHECK(read(far).iface_addr == this_host());
  far["ZF_IFACE_ADDR"] = "10.0.0.5";
  CHECK(read(far).iface_addr == "10.0.0.5");
}

TEST_CASE("launch env: torchrun errors name the variable") {
  CHECK(error_of({{"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}) ==
        "environment WORLD_SIZE is set but RANK is not (torchrun)");
  CHECK(error_of({{"WORLD_SIZE", "2"}, {"RANK", "2"}, {"MASTER_PORT", "1"}}) ==
        "environment RANK=2 must be below WORLD_SIZE=2 (torchrun)");
  CHECK(error_of({{"WORLD_SIZE", "two"}, {"RANK", "0"}}) ==
        "environment WORLD_SIZE=two (torchrun): expected an integer in 1..65536");
  CHECK(error_of({{"WORLD_SIZE", "2"}, {"RANK", "0"}}) ==
        "environment MASTER_PORT must be set when WORLD_SIZE > 1");
  // one rank needs no port
  CHECK(read({{"WORLD_SIZE", "1"}, {"RANK", "0"}}).master_port == 0);
}

TEST_CASE("launch env: srun step variables") {
  auto e = read(slurm_step());
  CHECK(e.present);
  CHECK(e.launcher == "slurm");
  CHECK(e.rank == 1);
  CHECK(e.world == 2);
  CHECK(e.local_rank == 1);
  CHECK(e.node == 0);
  CHECK(e.master_addr == "vm");
  CHECK(e.master_port == 20000 + (1 * 97 + 0) % 40000);
  CHECK(e.iface_addr == this_host());  // "vm" is a host name, not loopback text

  // several nodes: the master is the step's first node, expanded
  auto m = slurm_step();
  m["SLURM_STEP_NODELIST"] = "gpu[07-08,12]-ib";
  m["SLURM_JOB_NODELIST"] = "gpu[01-16]-ib";
  m["SLURM_JOB_ID"] = "123456";
  m["SLURM_STEP_ID"] = m["SLURM_STEPID"] = "3";
  e = read(m);
  CHECK(e.master_addr == "gpu07-ib");
  CHECK(e.master_port == 20000 + (123456 * 97 + 3) % 40000);
  CHECK(e.master_port == 35235);  // the formula in docs/cluster_slurm_mpirun.md, by hand
  // without the step's list the job's is used; MASTER_ADDR/MASTER_PORT win over both
  m.erase("SLURM_STEP_NODELIST");
  CHECK(read(m).master_addr == "gpu01-ib");
  m["MASTER_ADDR"] = "10.1.2.3";
  m["MASTER_PORT"] = "29400";
  e = read(m);
  CHECK(e.master_addr == "10.1.2.3");
  CHECK(e.master_port == 29400);
  // world: the step's task count wins over the job's (srun -n 2 inside sbatch -n 4)
  m = slurm_step();
  m["SLURM_NTASKS"] = "4";
  CHECK(read(m).world == 2);
  m.erase("SLURM_STEP_NUM_TASKS");
  CHECK(read(m).world == 4);
  // the older spelling of the step id alone is a step too
  m = slurm_step();
  m.erase("SLURM_STEP_ID");
  CHECK(read(m).launcher == "slurm");
}

TEST_CASE("launch env: a Slurm batch script outside srun is not a rank") {
  // What `sbatch -n 2` gives the batch script itself (Slurm 22.05): SLURM_PROCID=0 and the
  // job's SLURM_NTASKS, but no step id, step node list or step task count.
  env_map batch{{"SLURM_PROCID", "0"},        {"SLURM_NTASKS", "2"},    {"SLURM_NPROCS", "2"},
                {"SLURM_LOCALID", "0"},       {"SLURM_NODEID", "0"},    {"SLURM_JOB_ID", "2"},
                {"SLURM_JOB_NODELIST", "vm"}, {"SLURM_NODELIST", "vm"}, {"SLURM_GTIDS", "0"},
                {"SLURM_TASKS_PER_NODE", "2"}};
  auto e = read(batch);
  CHECK_FALSE(e.present);
  CHECK(e.world == 1);
  // salloc's shell: only the job's variables
  CHECK_FALSE(read({{"SLURM_NTASKS", "2"}, {"SLURM_JOB_ID", "3"}}).present);
}

TEST_CASE("launch env: Slurm errors name the variable") {
  auto m = slurm_step();
  m["SLURM_PROCID"] = "2";
  CHECK(error_of(m) == "environment SLURM_PROCID=2 must be below SLURM_STEP_NUM_TASKS=2 (slurm)");
  m = slurm_step();
  m.erase("SLURM_STEP_NUM_TASKS");
  m.erase("SLURM_NTASKS");
  CHECK(error_of(m) == "environment SLURM_PROCID is set but SLURM_NTASKS is not (slurm)");
  m = slurm_step();
  m["SLURM_STEP_NODELIST"] = "n[3-1]";
  CHECK(error_of(m) ==
        "environment SLURM_STEP_NODELIST: Slurm node list \"n[3-1]\": reversed range \"3-1\" (the "
        "lower bound comes first)");
  m = slurm_step();
  m.erase("SLURM_STEP_NODELIST");
  m.erase("SLURM_JOB_NODELIST");
  CHECK(error_of(m).starts_with("slurm: neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST"));
  m = slurm_step();
  m["SLURM_STEP_ID"] = "batch";
  CHECK(error_of(m) == "environment SLURM_STEP_ID=batch (slurm): expected a job or step number");
}

TEST_CASE("launch env: mpirun variables") {
  auto e = read(mpirun_two());
  CHECK(e.present);
  CHECK(e.launcher == "mpirun");
  CHECK(e.rank == 1);
  CHECK(e.world == 2);
  CHECK(e.local_rank == 1);
  CHECK(e.node == -1);
  CHECK(e.master_addr == "127.0.0.1");
  CHECK(e.iface_addr == "127.0.0.1");
  CHECK(e.master_port == zf::derived_port_text("219283457"));
  // every rank of one mpirun agrees; another job gets another port
  auto m = mpirun_two();
  m["OMPI_COMM_WORLD_RANK"] = m["OMPI_COMM_WORLD_LOCAL_RANK"] = "0";
  CHECK(read(m).master_port == e.master_port);
  m["OMPI_MCA_ess_base_jobid"] = "219283458";
  CHECK(read(m).master_port != e.master_port);
  // PMIX_NAMESPACE when the job id is missing
  m.erase("OMPI_MCA_ess_base_jobid");
  m["PMIX_NAMESPACE"] = "219283457";
  CHECK(read(m).master_port == e.master_port);
  // MASTER_ADDR / MASTER_PORT (mpirun -x) win
  m["MASTER_ADDR"] = "head";
  m["MASTER_PORT"] = "29500";
  e = read(m);
  CHECK(e.master_addr == "head");
  CHECK(e.master_port == 29500);
  CHECK(e.iface_addr == this_host());
}

TEST_CASE("launch env: mpirun over several hosts needs MASTER_ADDR") {
  auto m = mpirun_two();
  m["OMPI_COMM_WORLD_SIZE"] = "4";
  m["OMPI_COMM_WORLD_LOCAL_SIZE"] = "2";
  CHECK(error_of(m) ==
        "mpirun: the 4 ranks span several hosts (OMPI_COMM_WORLD_LOCAL_SIZE=2): pass the host of "
        "rank 0 as `mpirun -x MASTER_ADDR=HOST ...` (an address every host reaches)");
  m["MASTER_ADDR"] = "node1";
  auto e = read(m);
  CHECK(e.master_addr == "node1");
  CHECK(e.world == 4);
  m = mpirun_two();
  m["OMPI_COMM_WORLD_RANK"] = "5";
  CHECK(error_of(m) ==
        "environment OMPI_COMM_WORLD_RANK=5 must be below OMPI_COMM_WORLD_SIZE=2 "
        "(mpirun)");
  m = mpirun_two();
  m.erase("OMPI_MCA_ess_base_jobid");
  m.erase("PMIX_NAMESPACE");
  CHECK(error_of(m).starts_with("mpirun: neither OMPI_MCA_ess_base_jobid nor PMIX_NAMESPACE"));
}

TEST_CASE("launch env: precedence is torchrun then mpirun then Slurm") {
  // zeroflow launch (or a node agent) inside an srun step or an mpirun: its variables win
  env_map all = slurm_step();
  for (auto& [k, v] : mpirun_two()) all[k] = v;
  all["OMPI_COMM_WORLD_RANK"] = "0";
  all["SLURM_PROCID"] = "0";
  CHECK(read(all).launcher == "mpirun");
  all["WORLD_SIZE"] = "3";
  all["RANK"] = "2";
  all["MASTER_PORT"] = "1234";
  auto e = read(all);
  CHECK(e.launcher == "torchrun");
  CHECK(e.rank == 2);
  CHECK(e.world == 3);
  CHECK(e.master_port == 1234);
  // mpirun inside a Slurm allocation's srun step: Open MPI's ranks, not Slurm's task
  all.erase("WORLD_SIZE");
  all["OMPI_COMM_WORLD_RANK"] = "1";
  e = read(all);
  CHECK(e.launcher == "mpirun");
  CHECK(e.rank == 1);
  CHECK(e.master_addr == "127.0.0.1");
}

TEST_CASE("launch env: derived ports stay in 20000..59999") {
  for (uint64_t job : {0ull, 1ull, 39999ull, 40000ull, 123456789ull, 18446744073709551615ull})
    for (uint64_t step : {0ull, 1ull, 4294967294ull}) {
      const int p = zf::derived_port_slurm(job, step);
      CHECK(p >= 20000);
      CHECK(p <= 59999);
    }
  CHECK(zf::derived_port_slurm(1, 0) == 20097);
  CHECK(zf::derived_port_slurm(2, 0) == 20194);
  CHECK(zf::derived_port_slurm(1, 1) == 20098);
  // FNV-1a 64 of "" is its offset basis 14695981039346656037, mod 40000 = 16037
  CHECK(zf::derived_port_text("") == 20000 + 16037);
  CHECK(zf::derived_port_text("a") != zf::derived_port_text("b"));
}

TEST_CASE("slurm nodelist: ranges, lists, padding and suffixes") {
  using v = std::vector<std::string>;
  CHECK(zf::expand_slurm_nodelist("vm") == v{"vm"});
  CHECK(zf::expand_slurm_nodelist("n[1-3,7]") == v{"n1", "n2", "n3", "n7"});
  CHECK(zf::expand_slurm_nodelist("a[01-02]-ib") == v{"a01-ib", "a02-ib"});
  CHECK(zf::expand_slurm_nodelist("a[1-2],b3,c[5-6]") == v{"a1", "a2", "b3", "c5", "c6"});
  CHECK(zf::expand_slurm_nodelist("rack[1-2]-n[1-2]") ==
        v{"rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"});
  // the lower bound's width pads the range (scontrol show hostnames agrees)
  CHECK(zf::expand_slurm_nodelist("n[001-3]") == v{"n001", "n002", "n003"});
  CHECK(zf::expand_slurm_nodelist("n[0-003]") == v{"n0", "n1", "n2", "n3"});
  CHECK(zf::expand_slurm_nodelist("n[8-11]") == v{"n8", "n9", "n10", "n11"});
  CHECK(zf::expand_slurm_nodelist("n[09-10]") == v{"n09", "n10"});
  CHECK(zf::expand_slurm_nodelist("n[5]") == v{"n5"});
  CHECK(zf::expand_slurm_nodelist("n[1-2]-[3-4]") == v{"n1-3", "n1-4", "n2-3", "n2-4"});
  CHECK(zf::expand_slurm_nodelist("a-1.example.org,b") == v{"a-1.example.org", "b"});
  CHECK(zf::expand_slurm_nodelist("n[01-100]").size() == 100);
  CHECK(zf::expand_slurm_nodelist("n[01-100]").back() == "n100");
}

TEST_CASE("slurm nodelist: malformed lists are refused by name") {
  auto err = [](std::string_view s) {
    try {
      zf::expand_slurm_nodelist(s);
    } catch (const zf::error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(err("") == "Slurm node list \"\": empty (expected names such as n[1-3,7])");
  CHECK(err("n[1-2") == "Slurm node list \"n[1-2\": '[' without its ']'");
  CHECK(err("n1-2]") == "Slurm node list \"n1-2]\": ']' without its '[' at offset 4");
  CHECK(err("n[1[2]]") == "Slurm node list \"n[1[2]]\": '[' inside a bracket group at offset 3");
  CHECK(err("n[3-1]") ==
        "Slurm node list \"n[3-1]\": reversed range \"3-1\" (the lower bound comes first)");
  CHECK(err("n[010-8]").find("reversed range \"010-8\"") != std::string::npos);
  CHECK(err("n[]") ==
        "Slurm node list \"n[]\": range \"[]\": expected numbers or ranges such as "
        "1-3,7 (got \"\")");
  CHECK(err("n[1,,2]").find("(got \"\")") != std::string::npos);
  CHECK(err("n[a-b]").find("(got \"a-b\")") != std::string::npos);
  CHECK(err("n[1-2-3]").find("(got \"1-2-3\")") != std::string::npos);
  CHECK(err("n[-3]").find("(got \"-3\")") != std::string::npos);
  CHECK(err("a,,b") == "Slurm node list \"a,,b\": empty name at offset 2");
  CHECK(err("a,") == "Slurm node list \"a,\": empty name at offset 2");
  CHECK(err("a b") == "Slurm node list \"a b\": white space at offset 1");
  CHECK(err("n[0-99999999]").find("expands to more than 1048576 names") != std::string::npos);
  CHECK(err("a[0-2047]b[0-1023]").find("expands to more than") != std::string::npos);
}
