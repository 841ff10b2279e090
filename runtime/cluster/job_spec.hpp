#pragma once
// What one multi-node launch is, as plain values: the agents' addresses (`--nodes`), the token
// both sides share, the check every launch request passes before an agent starts anything, and
// the table of ranks (which node runs which global rank with which variables). The launcher and
// the node agents (actors/cluster_*) both use it; nothing here touches the network.
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace zf::cluster {

struct node_addr {
  std::string host;  // as given: a name, an IPv4 address, or an IPv6 address without brackets
  int port = 0;
  std::string text() const;  // "host:port", "[v6]:port"
};

// "h1:p1,h2:p2" ("[::1]:7000" for IPv6). zf::error naming the bad entry: missing or bad port
// (1..65535), empty host, duplicate entry, empty list.
std::vector<node_addr> parse_nodes(const std::string& list);

// "HOST:PORT" for `node --listen` (one entry; same rules as parse_nodes; port 0 allowed = any).
node_addr parse_listen(const std::string& text);

// The token in `path`: its content without trailing whitespace. zf::error naming the file when it
// is missing or unreadable, empty, shorter than 16 characters, or readable by others than its
// owner (mode & 077): a token others can read is no secret.
std::string read_token_file(const std::string& path);

// Equality that takes the same time wherever the strings differ (tokens, job secrets).
bool secret_equal(const std::string& a, const std::string& b);

// The subcommands an agent may start (the zeroflow binary itself, never another program).
// Only `train` today: the RL commands run their ranks as threads of one process.
const std::vector<std::string>& allowed_subcommands();  // {"train"}

// A launch request's argv[1..] for the zeroflow binary: zf::error naming the offending argument
// (by index and value, quoted) when args is empty, args[0] is not an allowed subcommand, any
// argument holds a shell metacharacter (any of ; & | ` $ < > \) or a control character (< 0x20 or
// 0x7f), there are more than 256 arguments, or one is longer than 4096 bytes. Nothing runs through
// a shell; the check refuses payloads outright so a request built to inject is logged and refused,
// not quietly neutralised.
void check_launch_args(const std::vector<std::string>& args);

// One node's share of an attempt, as the launcher sends it to that node's agent: its ranks are
// node * nproc_per_node .. + nproc_per_node - 1 of world.
struct node_share {
  std::string job;                // unique per attempt ("<run>-a<attempt>")
  int attempt = 1;                // 1, 2, ... (ranks see it as ZF_ATTEMPT)
  std::vector<std::string> args;  // argv[1..] of zeroflow, checked by the agent
  int node = 0;                   // this node's index among the attempt's nodes
  int world = 1;
  int nproc_per_node = 1;
  std::string master_host;  // rank 0's node
  int master_port = 0;
  std::string job_secret;  // the rendezvous secret of this attempt
  std::string node_host;   // this node's address (its ranks' data plane binds there)
};

// One rank of a planned job.
struct rank_slot {
  int rank = 0;        // global rank
  int local_rank = 0;  // on its node
  int node = 0;        // index into the node list the plan was made from
};

// Ranks node-major: node 0 holds ranks 0..k-1, node 1 k..2k-1, ... zf::error when nodes is empty
// or nproc_per_node < 1.
std::vector<rank_slot> plan_ranks(int nodes, int nproc_per_node);

// The variables one rank is started with: RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
// NODE_RANK, MASTER_ADDR (= master_host), MASTER_PORT, ZF_JOB_SECRET, ZF_IFACE_ADDR (= the rank's
// node host, the address its data plane binds).
std::vector<std::pair<std::string, std::string>> rank_env(
    const rank_slot& r, int world, int nproc_per_node, const std::string& master_host,
    int master_port, const std::string& job_secret, const std::string& node_host);

}  // namespace zf::cluster

namespace zf::cluster {

// A fault the cluster tests inject into one rank: ZF_FAULT_EXIT="RANK:STEP:CODE" makes rank RANK
// exit with CODE (or die by SIGKILL when CODE is "kill") right after training step STEP, on the
// first attempt only (ZF_ATTEMPT unset or 1), so a restarted job runs clean. nullopt when `spec`
// is null or empty, or aims at another rank or attempt; zf::error naming the variable when
// malformed.
struct injected_fault {
  int step = 0;
  int code = 0;  // -1 = SIGKILL
};
std::optional<injected_fault> injected_fault_for(int rank, const char* spec, const char* attempt);

}  // namespace zf::cluster

namespace zf::cluster {

// An attempt's arguments: the command as given for attempt 1; for a restart, any `--resume X`
// replaced by `--resume auto` (the run folder's last committed checkpoint is where it goes on
// from, a fresh start when it has none).
std::vector<std::string> attempt_args(const std::vector<std::string>& args, int attempt);

}  // namespace zf::cluster
