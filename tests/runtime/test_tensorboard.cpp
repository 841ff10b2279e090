// TensorBoard event files (runtime/monitor/tensorboard): the CRC32C check value, one record's
// bytes against bytes worked out by hand, a round trip of scalars through an independent reader
// (tfrecord_reader.hpp: its own CRC, framing and protobuf decoding), a cut or damaged file
// detected, buffering, and failures counted instead of thrown.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <optional>
#include <string>

#include "runtime/monitor/tensorboard.hpp"
#include "test_util.hpp"
#include "tfrecord_reader.hpp"

namespace tb = zf::testing::tfrecord;
using zf::monitor::tensorboard_writer;
using zf::testing::contains;

namespace {

// The one event file a writer made in dir.
std::string only_file(const std::filesystem::path& dir) {
  auto files = tb::event_files(dir);
  REQUIRE(files.size() == 1);
  return tb::slurp_binary(files[0]);
}

std::size_t first_record_size(const std::string& f) {
  REQUIRE(f.size() >= 12);
  return 12 + tb::le(f, 0, 8) + 4;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

TEST_CASE("tensorboard: CRC32C gives the standard check value, Boost and bitwise alike") {
  CHECK(zf::monitor::crc32c("123456789") == 0xE3069283u);
  CHECK(tb::crc32c_bitwise("123456789") == 0xE3069283u);
  CHECK(zf::monitor::crc32c("") == 0u);
  const std::string s = "brain.Event:2 and some more bytes \x01\xff";
  CHECK(zf::monitor::crc32c(s) == tb::crc32c_bitwise(s));
  CHECK(zf::monitor::masked_crc32c(s) == tb::masked(tb::crc32c_bitwise(s)));
}

TEST_CASE("tensorboard: one scalar's record equals the bytes worked out by hand") {
  zf::testing::temp_dir d("tb_bytes");
  {
    tensorboard_writer w(d.path);
    w.add_scalar("a", 3, 2.0, 1.5);
  }
  const std::string f = only_file(d.path);
  // Event { wall_time: 1.5, step: 3, summary { value { tag: "a", simple_value: 2 } } }
  const unsigned char event[] = {
      0x09, 0,    0,   0, 0,    0, 0, 0xf8, 0x3f,  // field 1 fixed64: 1.5 = 0x3FF8000000000000 LE
      0x10, 0x03,                                  // field 2 varint: 3
      0x2a, 0x0a,                                  // field 5 (Summary), 10 bytes
      0x0a, 0x08,                                  //   field 1 (Value), 8 bytes
      0x0a, 0x01, 'a',                             //     field 1 string: "a"
      0x15, 0,    0,   0, 0x40,                    //     field 2 fixed32: 2.0f = 0x40000000 LE
  };
  std::string want;
  want += std::string("\x17\0\0\0\0\0\0\0", 8);  // 23 data bytes
  want += std::string("\xe7\xce\xf8\x1e", 4);    // masked CRC32C of those 8 bytes: 0x1ef8cee7
  want += std::string(reinterpret_cast<const char*>(event), sizeof event);
  want += std::string("\xe8\x1c\x3a\x9d", 4);  // masked CRC32C of the data: 0x9d3a1ce8
  const std::size_t head = first_record_size(f);
  CHECK(f.substr(head) == want);
  // the first record: Event { wall_time: now, file_version: "brain.Event:2" }
  const std::string version = f.substr(12, head - 16);
  REQUIRE(version.size() == 9 + 15);
  CHECK(version[0] == '\x09');
  CHECK(version.substr(9) == std::string("\x1a\x0d") + "brain.Event:2");
}

TEST_CASE("tensorboard: scalars read back through an independent reader") {
  zf::testing::temp_dir d("tb_round");
  const double t0 = unix_now();
  struct scalar {
    std::string tag;
    int64_t step;
    double value, wall;
  };
  const std::vector<scalar> in = {
      {"train/loss", 1, 10.8765432109, t0 + 0.25},
      {"train/lr", 1, 2e-3, t0 + 0.25},
      {"train/val_loss", 0, 0.0, t0 + 1},  // zero step and value
      {"train/grad_norm", 300, -1.5, t0 + 2.125},
      {"train/tokens", int64_t(1) << 40, 123456789012.0, t0 + 3},  // multi-byte varint
      {"train/x", -7, 1e30, 0.0},  // a negative step: a ten-byte varint
      {std::string(200, 't'), 9, std::numeric_limits<double>::infinity(), t0},  // 2-byte length
  };
  std::string file;
  {
    tensorboard_writer w(d.path);
    for (auto& s : in) w.add_scalar(s.tag, s.step, s.value, s.wall);
    w.flush();
    CHECK(w.failures() == 0);
    file = w.file().filename().string();
  }
  // events.out.tfevents.<unix seconds>.<hostname>
  REQUIRE(file.rfind("events.out.tfevents.", 0) == 0);
  const std::string rest = file.substr(20);
  const double secs = std::stod(rest.substr(0, rest.find('.')));
  CHECK(std::abs(secs - t0) < 5);
  CHECK(rest.find('.') + 1 < rest.size());  // a host name follows

  const auto got = tb::read_events(only_file(d.path));
  CHECK(got.error == "");
  REQUIRE(got.events.size() == in.size() + 1);
  CHECK(got.events[0].file_version == "brain.Event:2");
  CHECK(got.events[0].values.empty());
  CHECK(std::abs(got.events[0].wall_time - t0) < 5);
  for (std::size_t i = 0; i < in.size(); ++i) {
    CAPTURE(i);
    const auto& e = got.events[i + 1];
    CHECK(e.wall_time == in[i].wall);
    CHECK(e.step == in[i].step);
    CHECK(e.file_version == "");
    REQUIRE(e.values.size() == 1);
    CHECK(e.values[0].first == in[i].tag);
    CHECK(e.values[0].second == static_cast<float>(in[i].value));
  }
}

TEST_CASE("tensorboard: a cut or damaged file is detected, the whole records before it kept") {
  zf::testing::temp_dir d("tb_cut");
  {
    tensorboard_writer w(d.path);
    for (int s = 1; s <= 3; ++s) w.add_scalar("train/loss", s, 1.0 / s, 100.0 + s);
  }
  const std::string f = only_file(d.path);
  REQUIRE(tb::read_events(f).error == "");
  const auto cut = tb::read_events(f.substr(0, f.size() - 3));  // the last record's CRC cut
  CHECK(contains(cut.error, "record 3 at byte"));
  CHECK(contains(cut.error, "cut: "));
  CHECK(cut.events.size() == 3);  // the version and two scalars
  std::size_t last = 0;           // where the last record (the 4th) starts
  for (int r = 0; r < 3; ++r) last += 12 + tb::le(f, last, 8) + 4;
  const auto head_cut = tb::read_events(f.substr(0, last + 5));
  CHECK(head_cut.error ==
        "record 3 at byte " + std::to_string(last) + ": cut in its length header");
  CHECK(head_cut.events.size() == 3);
  std::string flipped = f;
  flipped[f.size() - 6] ^= 0x01;  // a byte of the last event's value
  const auto bad = tb::read_events(flipped);
  CHECK(contains(bad.error, "record 3 at byte"));
  CHECK(contains(bad.error, "data CRC mismatch"));
  std::string bad_len = f;
  bad_len[0] ^= 0x01;
  CHECK(contains(tb::read_events(bad_len).error, "record 0 at byte 0: length CRC mismatch"));
}

TEST_CASE("tensorboard: scalars are buffered until flush or a full buffer") {
  zf::testing::temp_dir d("tb_buffer");
  tensorboard_writer w(d.path, 1 << 20);
  const auto size = [&] { return std::filesystem::file_size(w.file()); };
  const auto version_only = size();  // the version event is written at once
  CHECK(version_only == first_record_size(tb::slurp_binary(w.file())));
  w.add_scalar("train/loss", 1, 3.0, 1.0);
  CHECK(size() == version_only);
  w.flush();
  CHECK(size() > version_only);
  CHECK(tb::read_events(tb::slurp_binary(w.file())).events.size() == 2);

  zf::testing::temp_dir d2("tb_small_buffer");
  tensorboard_writer small(d2.path, 1);  // every record written as it comes
  small.add_scalar("train/loss", 1, 3.0, 1.0);
  CHECK(tb::read_events(tb::slurp_binary(small.file())).events.size() == 2);
}

TEST_CASE("tensorboard: a folder that cannot be made counts failures and never throws") {
  zf::testing::temp_dir d("tb_fail");
  std::ofstream(d.path / "plain_file") << "x";  // a file where the folder should be
  std::optional<tensorboard_writer> w;
  REQUIRE_NOTHROW(w.emplace(d.path / "plain_file" / "run"));
  const auto after_open = w->failures();
  CHECK(after_open == 1);  // the version event could not be written
  CHECK_NOTHROW(w->add_scalar("train/loss", 1, 1.0, 1.0));
  CHECK_NOTHROW(w->flush());
  CHECK(w->failures() == after_open + 1);
  CHECK_NOTHROW(w.reset());
}
