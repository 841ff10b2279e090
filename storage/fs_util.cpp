#include "storage/fs_util.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "runtime/core/error.hpp"
#include "storage/fault_inject.hpp"

namespace zf::storage {

void fsync_path(const std::filesystem::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open {} to fsync: {}", p.string(), std::strerror(errno));
  int rc = detail::io_fails() ? -1 : ::fsync(fd);
  const int e = errno;
  ::close(fd);
  errno = e;
  if (rc != 0) fail("fsync {} failed: {}", p.string(), std::strerror(errno));
}

void write_file_atomic(const std::filesystem::path& p, const void* data, std::size_t n) {
  using detail::io_fails;
  auto tmp = p;
  // unique per process: ranks of one job may write the same file (a corpus cache) at once
  tmp += ".tmp" + std::to_string(::getpid());
  int fd = io_fails() ? -1 : ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create {}: {}", tmp.string(), std::strerror(errno));
  // Every failure removes the temp file: on a full disk a leftover would keep it full (and
  // `latest.tmpNNN` files would pile up in a checkpoint root with each failed commit).
  auto give_up = [&](const char* what, int e) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    fail("{} {} failed: {}", what, tmp.string(), std::strerror(e));
  };
  const char* c = static_cast<const char*>(data);
  std::size_t done = 0;
  while (done < n) {
    ssize_t w = io_fails() ? -1 : ::write(fd, c + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) give_up("write", w < 0 ? errno : EIO);
    done += static_cast<std::size_t>(w);
  }
  if ((io_fails() ? -1 : ::fsync(fd)) != 0) give_up("fsync", errno);
  ::close(fd);
  fd = -1;
  std::error_code ec = detail::io_fault_ec();
  if (!ec) std::filesystem::rename(tmp, p, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    fail("rename {} -> {} failed: {}", tmp.string(), p.string(), ec.message());
  }
  auto parent = p.parent_path();
  fsync_path(parent.empty() ? "." : parent);
}

void write_pieces_atomic(const std::filesystem::path& p, std::string_view what,
                         const std::function<void(const piece_writer& put)>& body) {
  auto tmp = p;
  tmp += ".tmp";
  const std::string tmps = tmp.string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{} '{}': cannot create: {}", what, tmps, std::strerror(errno));
  const piece_writer put = [&](const void* data, std::size_t n) {
    const auto* c = static_cast<const char*>(data);
    while (n > 0) {
      const std::size_t chunk = std::min<std::size_t>(n, std::size_t{1} << 30);
      const ssize_t w = ::write(fd, c, chunk);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail("{} '{}': write failed: {}", what, tmps, std::strerror(errno));
      }
      c += w;
      n -= static_cast<std::size_t>(w);
    }
  };
  try {
    body(put);
    if (::fsync(fd) != 0) fail("{} '{}': fsync failed: {}", what, tmps, std::strerror(errno));
    const int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail("{} '{}': close failed: {}", what, tmps, std::strerror(errno));
    if (::rename(tmp.c_str(), p.c_str()) != 0)
      fail("{} '{}': cannot rename '{}' over it: {}", what, p.string(), tmps, std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename durable; a failure here leaves a complete file, so it is not an error.
  std::filesystem::path dir = p.parent_path();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::filesystem::path& p, const std::string& text) {
  write_file_atomic(p, text.data(), text.size());
}

void require_regular(int fd, const std::filesystem::path& p) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const mode_t m = st.st_mode;
    const char* what = S_ISDIR(m)                 ? "a folder"
                       : S_ISFIFO(m)              ? "a FIFO"
                       : S_ISSOCK(m)              ? "a socket"
                       : S_ISCHR(m) || S_ISBLK(m) ? "a device"
                                                  : "not a regular file";
    fail("{} is {}, not a regular file", p.string(), what);
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
}

int open_regular(const std::filesystem::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail("cannot open {}: {}", p.string(), std::strerror(errno));
  try {
    require_regular(fd, p);
  } catch (...) {
    ::close(fd);
    throw;
  }
  return fd;
}

std::string read_text_file(const std::filesystem::path& p) {
  const int fd = open_regular(p);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int e = errno;
      ::close(fd);
      fail("read {} failed: {}", p.string(), std::strerror(e));
    }
    if (r == 0) break;
    out.append(buf, static_cast<std::size_t>(r));
  }
  ::close(fd);
  return out;
}

uint32_t crc32_of(const void* data, std::size_t n, uint32_t seed) {
  uLong c = seed;
  const Bytef* b = static_cast<const Bytef*>(data);
  while (n) {  // zlib takes uInt lengths
    uInt chunk = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
    c = ::crc32(c, b, chunk);
    b += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

uint32_t crc32_file(const std::filesystem::path& p, std::size_t* size) {
  int fd = open_regular(p);
  std::vector<char> buf(1 << 20);
  uint32_t c = 0;
  std::size_t total = 0;
  for (;;) {
    ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      ::close(fd);
      fail("read {} failed: {}", p.string(), std::strerror(e));
    }
    if (r == 0) break;
    c = crc32_of(buf.data(), static_cast<std::size_t>(r), c);
    total += static_cast<std::size_t>(r);
  }
  ::close(fd);
  if (size) *size = total;
  return c;
}

mapped_file mapped_file::open(const std::filesystem::path& p, std::string_view what,
                              std::size_t min_len) {
  const int fd = open_regular(p);  // a FIFO, folder or device refused by name, never waited on
  struct stat st {};
  ::fstat(fd, &st);
  const std::size_t len = static_cast<std::size_t>(st.st_size);
  if (len < min_len) {
    ::close(fd);
    fail("{} {} is truncated: {} bytes, smaller than its {}-byte header", what, p.string(), len,
         min_len);
  }
  void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) fail("cannot mmap {} {}: {}", what, p.string(), std::strerror(errno));
  mapped_file f;
  f.addr_ = m;
  f.len_ = len;
  return f;
}

mapped_file::~mapped_file() {
  if (addr_) ::munmap(addr_, len_);
}

}  // namespace zf::storage
