#pragma once
// A file mapped into memory (POSIX), for Gram storage larger than RAM wants to hold.  Not public API.

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <utility>

#include "../errors.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define NTK_HAVE_MMAP 1
#endif

namespace ntk {
namespace detail {

/// Owns a shared read-write mapping of `bytes` bytes of a file it creates (or truncates).
/// Move-only; unmaps (and, when asked, removes the file) on destruction.
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const char* function, const std::string& path, std::size_t bytes, bool remove_on_close)
      : m_path(path), m_bytes(bytes), m_remove(remove_on_close) {
#if defined(NTK_HAVE_MMAP)
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail<std::invalid_argument>(function, "cannot create file '", path, "' (", std::strerror(errno), ")");
    int status = ::ftruncate(fd, static_cast<off_t>(bytes));
    if (status != 0) {
      const int saved = errno;
      ::close(fd);
      ::unlink(path.c_str());
      fail<std::invalid_argument>(function, "cannot size file '", path, "' to ", bytes, " bytes (",
                                  std::strerror(saved), ")");
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int saved = errno;
    ::close(fd);
    if (p == MAP_FAILED) {
      ::unlink(path.c_str());
      fail<std::invalid_argument>(function, "cannot map file '", path, "' (", std::strerror(saved), ")");
    }
    m_data = p;
#else
    fail<std::invalid_argument>(function, "file-backed storage needs POSIX mmap (got path '", path, "')");
#endif
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept {
    swap(other);
  }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      MappedFile gone(std::move(*this));
      swap(other);
    }
    return *this;
  }
  ~MappedFile() {
    release();
  }

  void* data() const {
    return m_data;
  }
  std::size_t bytes() const {
    return m_bytes;
  }
  const std::string& path() const {
    return m_path;
  }

 private:
  void swap(MappedFile& other) noexcept {
    std::swap(m_data, other.m_data);
    std::swap(m_path, other.m_path);
    std::swap(m_bytes, other.m_bytes);
    std::swap(m_remove, other.m_remove);
  }
  void release() noexcept {
#if defined(NTK_HAVE_MMAP)
    if (m_data != nullptr) {
      ::munmap(m_data, m_bytes);
      if (m_remove) ::unlink(m_path.c_str());
    }
#endif
    m_data = nullptr;
  }

  void* m_data = nullptr;
  std::string m_path;
  std::size_t m_bytes = 0;
  bool m_remove = false;
};

}  // namespace detail
}  // namespace ntk
