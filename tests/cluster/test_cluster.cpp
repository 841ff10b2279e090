// zeroflow under real launchers: Slurm's srun and sbatch (the one-node cluster that
// tests/cluster/slurm_up.sh starts, CTest fixture `slurm`) and Open MPI's mpirun. The ranks find
// their rank, world and master from the launcher's own variables (runtime/core/launch.hpp);
// their losses must follow the one-process run's (relative 1e-5), and scancel must leave no
// rank behind.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/helpers.hpp"

namespace fs = std::filesystem;
using zf::testing::slurp;
using zf::testing::temp_dir;

namespace {

const std::string zeroflow_bin = std::string(ZF_BINARY_DIR) + "/zeroflow";

// The tiny model of tests/integration/test_zero_train.cpp, 20 steps, one kernel thread a rank.
const std::string common =
    " --set model.n_layer=2 --set model.n_head=2 --set model.n_embd=32"
    " --set model.n_positions=32 --set train.seq_len=32 --set train.steps=20"
    " --set schedule.warmup=4 --set optimizer.lr=3e-3 --set eval.every=10"
    " --set eval.batches=2 --set checkpoint.every=10 --set train.sample_tokens=0"
    " --set train.threads=1 --set data.data_dir=" ZF_DATA_DIR;

// No launcher variables of the calling shell leak into the launched ranks.
const std::string clean_env =
    "unset WORLD_SIZE RANK LOCAL_RANK MASTER_ADDR MASTER_PORT OMPI_COMM_WORLD_SIZE "
    "SLURM_PROCID SLURM_STEP_ID SLURM_JOB_ID; export OPENBLAS_NUM_THREADS=1; ";

// exit code of `sh -c cmd`
int shell(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

std::vector<double> losses(const fs::path& metrics) {
  std::vector<double> v;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    const auto p = line.find("\"loss\":");
    if (p != std::string::npos) v.push_back(std::stod(line.substr(p + 7)));
  }
  return v;
}

// The one-process run every launched group is compared with: batch 4 on one rank.
fs::path reference_run(const temp_dir& d) {
  const fs::path out = d.path / "one";
  auto one = zf::testing::zeroflow(
      "train --quiet --set train.batch_size=4" + common + " --out " + out.string(), d.path);
  INFO(one.out);
  REQUIRE(one.code == 0);
  return out;
}

// Two ranks of batch 2 follow the one-rank batch-4 run's losses at every step.
void check_same_losses(const fs::path& one, const fs::path& two) {
  const auto a = losses(one / "metrics.jsonl"), b = losses(two / "metrics.jsonl");
  REQUIRE(a.size() == 20);
  REQUIRE(b.size() == 20);
  for (size_t s = 0; s < a.size(); ++s) {
    CAPTURE(s);
    CHECK(std::abs(a[s] - b[s]) <= 1e-5 * std::abs(a[s]));
  }
}

// /proc/<pid>/environ (NUL-separated) holds `entry` exactly.
bool environ_has(const fs::path& proc, const std::string& entry) {
  std::string env = slurp(proc / "environ");
  for (auto& c : env)
    if (c == '\0') c = '\n';
  return ("\n" + env).find("\n" + entry + "\n") != std::string::npos;
}

// A process with this pid is the zeroflow rank of Slurm job `job`, alive (a zombie is not).
bool is_live_rank(int pid, const std::string& job) {
  const fs::path proc = fs::path("/proc") / std::to_string(pid);
  const std::string stat = slurp(proc / "stat");
  const auto paren = stat.rfind(')');
  if (stat.empty() || paren == std::string::npos || stat.substr(paren + 2, 1) == "Z") return false;
  const std::string cmd = slurp(proc / "cmdline");
  return cmd.find("zeroflow") != std::string::npos && environ_has(proc, "SLURM_JOB_ID=" + job);
}

// pids of the live zeroflow processes of Slurm job `job`
std::vector<int> ranks_of_job(const std::string& job) {
  std::vector<int> pids;
  for (auto& e : fs::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (is_live_rank(std::stoi(name), job)) pids.push_back(std::stoi(name));
  }
  return pids;
}

// stdout of `sh -c cmd`, through a file of scratch folder d
std::string slurp_cmd_output(const std::string& cmd, const temp_dir& d) {
  const fs::path out = d.path / "cmd.out";
  shell(cmd + " > " + out.string() + " 2>/dev/null");
  return slurp(out);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Waits up to `seconds` for pred(); true when it held.
template <class F>
bool wait_for(double seconds, F pred) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

}  // namespace

TEST_CASE("cluster: srun -n 2 zeroflow train at ZeRO stage 2 follows the one-process losses") {
  temp_dir d("srun");
  const fs::path one = reference_run(d), two = d.path / "two", log = d.path / "srun.log";
  // A job secret, as examples/cluster/sbatch_train.sh makes one; -t: Slurm ends a stuck job.
  const int rc = shell(clean_env +
                       "export ZF_JOB_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n'); "
                       "srun -n 2 -t 5 -J zf-test-srun --kill-on-bad-exit=1 " +
                       zeroflow_bin + " train --set train.batch_size=2 --set zero.stage=2" +
                       common + " --out " + two.string() + " > " + log.string() + " 2>&1");
  const std::string out = slurp(log);
  INFO(out);
  REQUIRE(rc == 0);
  // the ranks found each other from Slurm's variables: one group of two processes
  CHECK(out.find("20 steps from step 0, 2 rank(s) (processes, gloo) at ZeRO stage 2") !=
        std::string::npos);
  check_same_losses(one, two);
  auto info = zf::testing::zeroflow("ckpt info " + two.string(), d.path);
  CHECK(info.out.find("ZeRO stage 2") != std::string::npos);
  CHECK(zf::testing::zeroflow("ckpt verify " + two.string(), d.path).code == 0);
}

TEST_CASE("cluster: examples/cluster/sbatch_train.sh trains 2 ranks on one node") {
  // The example asks for 2 nodes; sbatch's own options override its #SBATCH lines.
  temp_dir d("sbatch-example");
  const fs::path one = reference_run(d), log = d.path / "job.log";
  const int rc = shell(clean_env + "export ZEROFLOW=" + zeroflow_bin +
                       "; sbatch -W -N 1 --ntasks-per-node=2 -t 5 -J zf-test-example --chdir " +
                       d.path.string() + " -o " + log.string() +
                       " " ZF_SOURCE_DIR
                       "/examples/cluster/sbatch_train.sh --set train.batch_size=2 --set "
                       "zero.stage=2" +
                       common + " > /dev/null");
  const std::string out = slurp(log);
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(out.find("2 rank(s) (processes, gloo) at ZeRO stage 2") != std::string::npos);
  std::vector<fs::path> runs;  // runs/<job id>
  for (auto& e : fs::directory_iterator(d.path / "runs")) runs.push_back(e.path());
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].filename().string().find_first_not_of("0123456789") == std::string::npos);
  check_same_losses(one, runs[0]);
}

TEST_CASE("cluster: a zeroflow train in an sbatch script outside srun is one process") {
  // The batch script has SLURM_PROCID=0 and the job's SLURM_NTASKS=2 but is no job step: it must
  // train alone (batch 4, the reference's numbers), not wait for a rank 1 that never comes.
  temp_dir d("sbatch-alone");
  const fs::path one = reference_run(d), alone = d.path / "alone", log = d.path / "job.log";
  const int rc = shell(clean_env + "sbatch -W -n 2 -t 5 -J zf-test-batch -o " + log.string() +
                       " --wrap '" + zeroflow_bin + " train --set train.batch_size=4" + common +
                       " --out " + alone.string() + "' > /dev/null");
  const std::string out = slurp(log);
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(out.find("1 rank(s) (threads)") != std::string::npos);
  const auto a = losses(one / "metrics.jsonl"), b = losses(alone / "metrics.jsonl");
  REQUIRE(a.size() == 20);
  CHECK(a == b);  // the same process, the same numbers
}

TEST_CASE("cluster: scancel of a running srun job stops both ranks") {
  temp_dir d("scancel");
  const std::string name = "zf-test-scancel-" + std::to_string(::getpid());
  const fs::path log = d.path / "srun.log";
  const std::string cmd = clean_env + "exec srun -n 2 -t 5 -J " + name + " " + zeroflow_bin +
                          " train --set train.batch_size=2 --set zero.stage=2" + common +
                          " --set train.steps=100000 --set checkpoint.every=0 --out " +
                          (d.path / "run").string() + " > " + log.string() + " 2>&1";
  const pid_t srun = ::fork();
  REQUIRE(srun >= 0);
  if (srun == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    ::_exit(127);
  }
  std::string job;
  struct reaper {  // whatever happens, leave neither the job nor srun behind
    const std::string& job;
    pid_t srun;
    ~reaper() {
      if (!job.empty()) shell("scancel --signal=KILL --full " + job + " 2>/dev/null");
      if (srun > 0) {  // never kill(-1): every process
        ::kill(srun, SIGKILL);
        ::waitpid(srun, nullptr, 0);
      }
    }
  } reap{job, srun};
  REQUIRE(wait_for(30, [&] {
    job = trim(slurp_cmd_output("squeue -h -n " + name + " -o %i", d));
    return !job.empty();
  }));
  INFO("job " << job);
  // both ranks up and training (the lead prints step 10 once the group has formed)
  std::vector<int> pids;
  REQUIRE(wait_for(60, [&] {
    pids = ranks_of_job(job);
    return pids.size() == 2 && slurp(log).find("step 10/") != std::string::npos;
  }));
  INFO(slurp(log));
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(shell("scancel " + job) == 0);
  // every rank gone within Slurm's KillWait (5 s) and a margin
  CHECK(wait_for(15, [&] { return !is_live_rank(pids[0], job) && !is_live_rank(pids[1], job); }));
  const double stopped_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("ranks stopped " << stopped_s << " s after scancel");
  CHECK(ranks_of_job(job).empty());
  // srun ends with the cancelled step's status, and the job leaves the queue
  int st = 0;
  CHECK(wait_for(15, [&] { return ::waitpid(srun, &st, WNOHANG) == srun; }));
  reap.srun = -1;
  CHECK((WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)) != 0);
  CHECK(wait_for(20, [&] { return trim(slurp_cmd_output("squeue -h -j " + job, d)).empty(); }));
  job.clear();
}

TEST_CASE("cluster: mpirun -n 2 zeroflow train follows the one-process losses") {
  temp_dir d("mpirun");
  const fs::path one = reference_run(d), two = d.path / "two", log = d.path / "mpirun.log";
  const int rc = shell(clean_env +
                       "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                       "OMPI_MCA_rmaps_base_oversubscribe=1; "
                       "timeout 120 mpirun -n 2 --bind-to none " +
                       zeroflow_bin + " train --set train.batch_size=2 --set zero.stage=2" +
                       common + " --out " + two.string() + " > " + log.string() + " 2>&1");
  const std::string out = slurp(log);
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(out.find("20 steps from step 0, 2 rank(s) (processes, gloo) at ZeRO stage 2") !=
        std::string::npos);
  check_same_losses(one, two);
}
