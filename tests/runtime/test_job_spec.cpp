// job_spec (runtime/cluster): the node list and listen address parsed or refused with the bad
// entry named, token files read only when private, launch requests refused on any shell
// metacharacter or control character, the rank table node-major and the variables of one rank.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "runtime/cluster/job_spec.hpp"
#include "runtime/core/error.hpp"

namespace {

using zf::cluster::check_launch_args;
using zf::cluster::parse_listen;
using zf::cluster::parse_nodes;

// The zf::error message `f` throws, "" when it throws nothing.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const zf::error& e) {
    return e.what();
  }
  return "";
}

std::string nodes_error(const std::string& list) {
  return error_of([&] { parse_nodes(list); });
}

std::string args_error(const std::vector<std::string>& args) {
  return error_of([&] { check_launch_args(args); });
}

// A private temporary folder, removed at the end of the test.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "zf-job-spec-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name, const std::string& content, mode_t mode) const {
    const auto p = (path / name).string();
    std::ofstream(p, std::ios::binary) << content;
    REQUIRE(::chmod(p.c_str(), mode) == 0);
    return p;
  }
};

}  // namespace

TEST_CASE("job spec: node lists parse, IPv6 in brackets, text round trips") {
  const auto nodes = parse_nodes("h1:7000, 10.0.0.2:7001,[::1]:7002,[fe80::1:2]:65535");
  REQUIRE(nodes.size() == 4);
  CHECK(nodes[0].host == "h1");
  CHECK(nodes[0].port == 7000);
  CHECK(nodes[1].host == "10.0.0.2");
  CHECK(nodes[1].port == 7001);
  CHECK(nodes[2].host == "::1");
  CHECK(nodes[2].port == 7002);
  CHECK(nodes[3].host == "fe80::1:2");
  CHECK(nodes[3].port == 65535);
  CHECK(nodes[0].text() == "h1:7000");
  CHECK(nodes[2].text() == "[::1]:7002");
  for (const auto& n : nodes) {
    const auto again = parse_nodes(n.text());
    REQUIRE(again.size() == 1);
    CHECK(again[0].host == n.host);
    CHECK(again[0].port == n.port);
  }
  CHECK(parse_nodes("solo:1").size() == 1);
  CHECK(parse_nodes("a:1,b:1").size() == 2);  // same port, other host: two agents
}

TEST_CASE("job spec: bad node lists name the entry and what is wrong") {
  CHECK(nodes_error("").starts_with("node list is empty"));
  CHECK(nodes_error("  ").starts_with("node list is empty"));
  CHECK(nodes_error("a:1,,b:2") == "node list entry 2 is empty (in \"a:1,,b:2\")");
  CHECK(nodes_error("a:1,") == "node list entry 2 is empty (in \"a:1,\")");
  CHECK(nodes_error("a:1,host") ==
        "node list entry 2 \"host\": no port (expected HOST:PORT, or [IPv6]:PORT)");
  CHECK(nodes_error("host:").starts_with("node list entry 1 \"host:\": no port"));
  CHECK(nodes_error("host:0") ==
        "node list entry 1 \"host:0\": port \"0\" is not a number in 1..65535");
  CHECK(nodes_error("host:65536").find("port \"65536\" is not a number in 1..65535") !=
        std::string::npos);
  CHECK(nodes_error("host:12x").find("port \"12x\"") != std::string::npos);
  CHECK(nodes_error("host:-1").find("port \"-1\"") != std::string::npos);
  CHECK(nodes_error(":7000").starts_with("node list entry 1 \":7000\": empty host"));
  CHECK(nodes_error("::1:7000") ==
        "node list entry 1 \"::1:7000\": an IPv6 address needs brackets, e.g. \"[::1]:7000\"");
  CHECK(nodes_error("[::1:7000").starts_with("node list entry 1 \"[::1:7000\": no closing ']'"));
  CHECK(nodes_error("[::1]7000").starts_with("node list entry 1 \"[::1]7000\": no port after"));
  CHECK(nodes_error("[::1]:").starts_with("node list entry 1 \"[::1]:\": no port"));
  CHECK(nodes_error("[]:7000").starts_with("node list entry 1 \"[]:7000\": empty host"));
  CHECK(nodes_error("[host]:7000")
            .starts_with(
                "node list entry 1 \"[host]:7000\": \"host\" inside [] is not an IPv6 address"));
  CHECK(nodes_error("a b:1").find("\"a b\" is not a host name") != std::string::npos);
  CHECK(nodes_error("a:1,b:2,a:1") == "node list entry 3 \"a:1\": a:1 is listed twice");
  CHECK(nodes_error("[::1]:7,[::1]:7") == "node list entry 2 \"[::1]:7\": [::1]:7 is listed twice");
}

TEST_CASE("job spec: listen addresses allow port 0 and one entry only") {
  const auto any = parse_listen("0.0.0.0:0");
  CHECK(any.host == "0.0.0.0");
  CHECK(any.port == 0);
  const auto v6 = parse_listen("[::]:7000");
  CHECK(v6.host == "::");
  CHECK(v6.port == 7000);
  CHECK(error_of([] { parse_listen(""); }).starts_with("listen address is empty"));
  CHECK(error_of([] { parse_listen("a:1,b:2"); }) ==
        "listen address \"a:1,b:2\": one HOST:PORT only");
  CHECK(error_of([] { parse_listen("h:70000"); }) ==
        "listen address \"h:70000\": port \"70000\" is not a number in 0..65535");
  CHECK(error_of([] { parse_listen("h"); }).starts_with("listen address \"h\": no port"));
}

TEST_CASE("job spec: token files are read only when private and long enough") {
  temp_dir dir;
  const std::string token = "0123456789abcdef";  // 16 characters: the least allowed
  CHECK(zf::cluster::read_token_file(dir.file("ok", token + "\n \t\r\n", 0600)) == token);
  CHECK(zf::cluster::read_token_file(dir.file("ro", " x" + token, 0400)) == " x" + token);
  for (mode_t mode : {0644, 0640, 0604, 0660, 0602, 0620, 0610, 0601}) {
    CAPTURE(mode);
    const auto p = dir.file("open", token, mode);
    const auto msg = error_of([&] { zf::cluster::read_token_file(p); });
    CHECK(msg.starts_with("token file \"" + p + "\" can be read or written by others"));
    CHECK(msg.find(fmt::format("(mode {:04o})", mode)) != std::string::npos);
    CHECK(msg.find("run `chmod 600 " + p + "`") != std::string::npos);
  }
  const auto empty = dir.file("empty", "", 0600);
  CHECK(error_of([&] { zf::cluster::read_token_file(empty); }) ==
        "token file \"" + empty + "\" is empty");
  const auto blank = dir.file("blank", " \n\n", 0600);
  CHECK(error_of([&] { zf::cluster::read_token_file(blank); }) ==
        "token file \"" + blank + "\" is empty");
  const auto short_ = dir.file("short", token.substr(1) + "\n", 0600);
  CHECK(error_of([&] { zf::cluster::read_token_file(short_); }) ==
        "token file \"" + short_ + "\" holds 15 characters: a token needs at least 16");
  const auto missing = (dir.path / "missing").string();
  CHECK(error_of([&] { zf::cluster::read_token_file(missing); }) ==
        "token file \"" + missing + "\": cannot open: No such file or directory");
  const auto folder = dir.path.string();
  CHECK(error_of([&] { zf::cluster::read_token_file(folder); }) ==
        "token file \"" + folder + "\": not a regular file");
}

TEST_CASE("job spec: secret_equal compares whole strings") {
  using zf::cluster::secret_equal;
  CHECK(secret_equal("", ""));
  CHECK(secret_equal("abcdef0123456789", "abcdef0123456789"));
  CHECK_FALSE(secret_equal("abcdef0123456789", "Abcdef0123456789"));
  CHECK_FALSE(secret_equal("abcdef0123456789", "abcdef012345678X"));
  CHECK_FALSE(secret_equal("abcdef0123456789", "abcdef012345678"));
  CHECK_FALSE(secret_equal(std::string("abc\0", 4), "abc"));
  CHECK_FALSE(secret_equal("", "a"));
  CHECK_FALSE(secret_equal("a", ""));
}

TEST_CASE("job spec: launch requests with a shell metacharacter are refused, naming it") {
  CHECK(args_error({"train", "--set", "a=1", "--out x;rm -rf /"}) ==
        "launch request: argument 3 \"--out x;rm -rf /\" holds the shell metacharacter ';': "
        "refused");
  for (const char c : std::string(";&|`$<>\\")) {
    CAPTURE(c);
    const std::string arg = std::string("a") + c + "b";
    const std::string shown = c == '\\' ? "a\\\\b" : arg;  // quoted: the backslash escaped
    CHECK(args_error({"train", "--out", arg}) ==
          fmt::format("launch request: argument 2 \"{}\" holds the shell metacharacter '{}': "
                      "refused",
                      shown, c));
    CHECK(args_error({std::string("train") + c}).find("argument 0") != std::string::npos);
  }
  CHECK(args_error({"train", "--out", "a b 'c' \"d\" (e) *f? ~g #h !i %j ^k {l} [m] é"}) == "");
}

TEST_CASE("job spec: launch requests with a control character are refused, shown escaped") {
  const std::vector<std::pair<std::string, std::string>> cases{{"a\nb", "0x0a"},
                                                               {"a\tb", "0x09"},
                                                               {"a\rb", "0x0d"},
                                                               {"\x01", "0x01"},
                                                               {"a\x1f", "0x1f"},
                                                               {"a\x7f", "0x7f"},
                                                               {std::string("a\0b", 3), "0x00"}};
  for (const auto& [arg, hex] : cases) {
    CAPTURE(hex);
    const auto msg = args_error({"train", "--set", arg});
    CHECK(msg.starts_with("launch request: argument 2 \""));
    CHECK(msg.ends_with("\" holds the control character " + hex + ": refused"));
    CHECK(msg.find('\n') == std::string::npos);  // a refusal cannot forge a log line
    CHECK(msg.find("\\x" + hex.substr(2)) != std::string::npos);
  }
}

TEST_CASE("job spec: only the allowed subcommands, counts and lengths within limits") {
  REQUIRE(zf::cluster::allowed_subcommands() == std::vector<std::string>{"train"});
  CHECK(args_error({"train"}) == "");
  CHECK(args_error({"train", "--set", "train.steps=3", "--out", "runs/a b"}) == "");
  for (const std::string sub :
       {"serve", "node", "launch", "grpo", "Train", "/bin/sh", "", " train"}) {
    CAPTURE(sub);
    CHECK(args_error({sub, "--x"}) ==
          "launch request: argument 0 \"" + sub +
              "\" is not a subcommand an agent may start (train): refused");
  }
  CHECK(args_error({}) ==
        "launch request: no arguments (expected a subcommand: train): refused");
  std::vector<std::string> many(256, "x");
  many[0] = "train";
  CHECK(args_error(many) == "");
  many.push_back("x");
  CHECK(args_error(many) == "launch request: 257 arguments, at most 256: refused");
  CHECK(args_error({"train", std::string(4096, 'a')}) == "");
  const auto msg = args_error({"train", "--out", std::string(4097, 'a')});
  CHECK(msg == "launch request: argument 2 \"" + std::string(80, 'a') +
                   "...\" is 4097 bytes, at most 4096: refused");
}

TEST_CASE("job spec: plan_ranks lays ranks out node-major") {
  const auto plan = zf::cluster::plan_ranks(3, 2);
  REQUIRE(plan.size() == 6);
  for (int i = 0; i < 6; ++i) {
    CAPTURE(i);
    CHECK(plan[std::size_t(i)].rank == i);
    CHECK(plan[std::size_t(i)].node == i / 2);
    CHECK(plan[std::size_t(i)].local_rank == i % 2);
  }
  const auto one = zf::cluster::plan_ranks(1, 1);
  REQUIRE(one.size() == 1);
  CHECK((one[0].rank == 0 && one[0].local_rank == 0 && one[0].node == 0));
  CHECK(error_of([] { zf::cluster::plan_ranks(0, 2); }) ==
        "rank plan: no nodes (expected at least 1, got 0)");
  CHECK(error_of([] { zf::cluster::plan_ranks(2, 0); }) ==
        "rank plan: processes per node must be at least 1, got 0");
  CHECK(error_of([] { zf::cluster::plan_ranks(70000, 1); }) != "");
}

TEST_CASE("job spec: rank_env holds the variables of one rank") {
  const zf::cluster::rank_slot slot{5, 1, 2};  // rank 5, local rank 1, node 2
  const auto env = zf::cluster::rank_env(slot, 8, 2, "10.0.0.1", 29500, "s3cret", "10.0.0.3");
  const std::map<std::string, std::string> got(env.begin(), env.end());
  const std::map<std::string, std::string> want{{"RANK", "5"},
                                                {"LOCAL_RANK", "1"},
                                                {"WORLD_SIZE", "8"},
                                                {"LOCAL_WORLD_SIZE", "2"},
                                                {"NODE_RANK", "2"},
                                                {"MASTER_ADDR", "10.0.0.1"},
                                                {"MASTER_PORT", "29500"},
                                                {"ZF_JOB_SECRET", "s3cret"},
                                                {"ZF_IFACE_ADDR", "10.0.0.3"}};
  CHECK(got == want);
  CHECK(env.size() == want.size());  // no name twice
}
