// The remote engine's process, folder and port (runtime/serve/engine_child): a private 0700
// rendezvous folder removed when done, a child that ends before publishing its port named with
// how it ended, the port read from what the caller polls.
#include <doctest/doctest.h>

#include <filesystem>

#include "runtime/serve/engine_child.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using zf::serve::engine_child;
using zf::testing::contains;
using zf::testing::error_of;
using zf::testing::temp_dir;

TEST_CASE("engine child: a child that ends first is named, the 0700 folder is removed") {
  temp_dir d("engine_child");
  fs::path dir;
  {
    engine_child c("/bin/true", d.path, "test engine");  // ignores its arguments, exits 0
    dir = c.dir();
    REQUIRE(fs::is_directory(dir));
    CHECK(dir.parent_path() == d.path);
    CHECK((fs::status(dir).permissions() & fs::perms::all) == fs::perms::owner_all);
    CHECK(c.secret().size() >= 16);
    const std::string m = error_of(
        [&] { (void)c.wait_port([] { return std::string(); }, std::chrono::seconds(30)); });
    CHECK(contains(m, "test engine (process "));
    CHECK(contains(m, "before it started"));
    REQUIRE(c.ended());
    CHECK(contains(*c.ended(), "test engine (process "));
    CHECK(c.gone_or("unused") == *c.ended());
  }
  CHECK_FALSE(fs::exists(dir));
}
