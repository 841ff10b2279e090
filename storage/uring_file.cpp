#include "storage/uring_file.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "runtime/core/error.hpp"
#include "storage/fault_inject.hpp"

namespace zf::storage {

namespace {

void pwrite_all(int fd, const std::byte* data, std::size_t n, uint64_t off,
                const std::filesystem::path& p) {
  while (n) {
    ssize_t w = detail::io_fails() ? -1 : ::pwrite(fd, data, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("write {} failed at byte {}: {}", p.string(), off, std::strerror(errno));
    data += w;
    n -= static_cast<std::size_t>(w);
    off += static_cast<uint64_t>(w);
  }
}

}  // namespace

struct uring_writer::impl {
  std::filesystem::path path;
  std::size_t chunk = 0;
  int fd_buf = -1, fd_direct = -1;
  bool ring_ok = false, finished = false;
  io_uring ring{};
  struct slot {
    std::byte* mem = nullptr;
    bool busy = false;
    std::size_t n = 0;  // bytes of the write in flight
    uint64_t off = 0;
  };
  std::vector<slot> slots;
  unsigned in_flight = 0;
  uint64_t end = 0;

  ~impl() {
    if (ring_ok) {
      while (in_flight) {  // the kernel may still read the buffers: wait before freeing them
        io_uring_cqe* cqe = nullptr;
        int rc = io_uring_wait_cqe(&ring, &cqe);
        if (rc == -EINTR) continue;
        if (rc < 0) break;
        io_uring_cqe_seen(&ring, cqe);
        --in_flight;
      }
      io_uring_queue_exit(&ring);
    }
    if (fd_direct >= 0) ::close(fd_direct);
    if (fd_buf >= 0) ::close(fd_buf);
    for (auto& s : slots) std::free(s.mem);
  }

  // Handles one completion: a short write is finished buffered; O_DIRECT refused (EINVAL) turns
  // O_DIRECT off and redoes the write buffered.
  void complete(io_uring_cqe* cqe) {
    slot& s = slots[static_cast<std::size_t>(io_uring_cqe_get_data64(cqe))];
    const int injected = detail::io_fault();  // the seam fails a queued write as it completes
    const int res = injected ? -injected : cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    --in_flight;
    s.busy = false;
    if (res < 0) {
      if (res == -EINVAL && fd_direct >= 0) {
        ::close(fd_direct);
        fd_direct = -1;
        pwrite_all(fd_buf, s.mem, s.n, s.off, path);
        return;
      }
      fail("write {} failed at byte {}: {}", path.string(), s.off, std::strerror(-res));
    }
    if (static_cast<std::size_t>(res) < s.n)
      pwrite_all(fd_buf, s.mem + res, s.n - static_cast<std::size_t>(res),
                 s.off + static_cast<uint64_t>(res), path);
  }

  void wait_one() {
    io_uring_cqe* cqe = nullptr;
    int rc;
    while ((rc = io_uring_wait_cqe(&ring, &cqe)) == -EINTR) {
    }
    if (rc < 0) fail("io_uring wait on {} failed: {}", path.string(), std::strerror(-rc));
    complete(cqe);
  }
};

uring_writer::uring_writer(const std::filesystem::path& p, const uring_options& o)
    : p_(std::make_unique<impl>()) {
  impl& m = *p_;
  m.path = p;
  m.chunk = (std::max<std::size_t>(o.chunk_bytes, k_align) + k_align - 1) / k_align * k_align;
  m.fd_buf =
      detail::io_fails() ? -1 : ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (m.fd_buf < 0) fail("cannot create {}: {}", p.string(), std::strerror(errno));
  if (o.direct) m.fd_direct = ::open(p.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);  // -1: buffered
  const unsigned depth = std::max(1u, o.depth);
  m.slots.resize(depth);
  for (auto& s : m.slots) {
    s.mem = static_cast<std::byte*>(std::aligned_alloc(k_align, m.chunk));
    if (!s.mem) fail("out of memory for {} write buffers of {} bytes", depth, m.chunk);
  }
  // No io_uring (an old kernel, a seccomp filter): the same writes, synchronously.
  m.ring_ok = io_uring_queue_init(depth + 1, &m.ring, 0) == 0;
}

uring_writer::~uring_writer() = default;

std::size_t uring_writer::chunk_bytes() const {
  return p_->chunk;
}
bool uring_writer::direct() const {
  return p_->fd_direct >= 0;
}

std::byte* uring_writer::acquire() {
  impl& m = *p_;
  for (;;) {
    for (auto& s : m.slots)
      if (!s.busy) return s.mem;
    m.wait_one();
  }
}

void uring_writer::submit(std::byte* buf, std::size_t n, uint64_t off) {
  impl& m = *p_;
  impl::slot* s = nullptr;
  for (auto& c : m.slots)
    if (c.mem == buf) s = &c;
  if (!s || s->busy || n > m.chunk) fail("uring_writer::submit: not a free buffer of this writer");
  if (n == 0) return;
  m.end = std::max(m.end, off + n);
  const bool aligned_off = off % k_align == 0;
  const std::size_t direct_n = m.fd_direct >= 0 && aligned_off ? n / k_align * k_align : 0;
  const std::size_t head = m.fd_direct >= 0 ? direct_n : n;  // bytes through the queue
  if (head && m.ring_ok) {
    io_uring_sqe* sqe = io_uring_get_sqe(&m.ring);
    while (!sqe) {  // cannot happen with depth+1 entries, but stay correct if it does
      m.wait_one();
      sqe = io_uring_get_sqe(&m.ring);
    }
    const int fd = m.fd_direct >= 0 ? m.fd_direct : m.fd_buf;
    io_uring_prep_write(sqe, fd, buf, static_cast<unsigned>(head), off);
    io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(s - m.slots.data()));
    s->busy = true;
    s->n = head;
    s->off = off;
    ++m.in_flight;
    int rc = io_uring_submit(&m.ring);
    if (rc < 0) fail("io_uring submit for {} failed: {}", m.path.string(), std::strerror(-rc));
  } else if (head) {
    if (m.fd_direct >= 0) {
      ssize_t w;
      while ((w = detail::io_fails()
                      ? -1
                      : ::pwrite(m.fd_direct, buf, head, static_cast<off_t>(off))) < 0 &&
             errno == EINTR) {
      }
      if (w < 0 && errno == EINVAL) {  // O_DIRECT refused: buffered from now on
        ::close(m.fd_direct);
        m.fd_direct = -1;
        w = 0;
      } else if (w < 0) {
        fail("write {} failed at byte {}: {}", m.path.string(), off, std::strerror(errno));
      }
      if (static_cast<std::size_t>(w) < head)
        pwrite_all(m.fd_buf, buf + w, head - static_cast<std::size_t>(w), off + w, m.path);
    } else {
      pwrite_all(m.fd_buf, buf, head, off, m.path);
    }
  }
  if (head < n) pwrite_all(m.fd_buf, buf + head, n - head, off + head, m.path);  // the tail
}

uint64_t uring_writer::finish() {
  impl& m = *p_;
  if (m.finished) return m.end;
  if (m.ring_ok) {
    while (m.in_flight) m.wait_one();
    if (const int e = detail::io_fault())
      fail("fsync {} failed: {}", m.path.string(), std::strerror(e));
    io_uring_sqe* sqe = io_uring_get_sqe(&m.ring);
    io_uring_prep_fsync(sqe, m.fd_buf, 0);
    io_uring_sqe_set_data64(sqe, ~uint64_t{0});
    int rc = io_uring_submit(&m.ring);
    if (rc < 0) fail("io_uring submit for {} failed: {}", m.path.string(), std::strerror(-rc));
    io_uring_cqe* cqe = nullptr;
    while ((rc = io_uring_wait_cqe(&m.ring, &cqe)) == -EINTR) {
    }
    if (rc < 0) fail("io_uring wait on {} failed: {}", m.path.string(), std::strerror(-rc));
    const int res = cqe->res;
    io_uring_cqe_seen(&m.ring, cqe);
    if (res < 0) fail("fsync {} failed: {}", m.path.string(), std::strerror(-res));
  } else if (detail::io_fails() || ::fsync(m.fd_buf) != 0) {
    fail("fsync {} failed: {}", m.path.string(), std::strerror(errno));
  }
  if (m.fd_direct >= 0) ::close(m.fd_direct);
  m.fd_direct = -1;
  int rc = ::close(m.fd_buf);
  m.fd_buf = -1;
  if (rc != 0) fail("close {} failed: {}", m.path.string(), std::strerror(errno));
  m.finished = true;
  return m.end;
}

}  // namespace zf::storage
