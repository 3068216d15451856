#pragma once
// Matrix input/output for the ntk command-line tool: CSV (comma-separated, optional header row,
// "-" for stdin/stdout) and NumPy .npy (float64/float32, C or Fortran order), chosen by the
// file's extension.  Every failure throws CliError with a one-line message.
//
// Reading streams: a CSV file is parsed cell by cell (no whole-file or whole-line string), a .npy
// file is checked against its header before any allocation.  Writing is atomic: a unique
// temporary in the target's folder (O_EXCL, never a planted name), renamed over the target at the
// end, removed on failure and on SIGINT/SIGTERM/SIGHUP.  What happens to an existing --out:
//   - a regular file is replaced (keeping its permission bits) unless it is read-only;
//   - a symbolic link is followed: the file it names is replaced, the link stays;
//   - a directory, or a link to nothing, is an error;
//   - a device, FIFO or socket (/dev/null, /dev/full, a pipe) is written in place, never replaced;
//   - the file an input was read from is refused (the input survives).

#include <Eigen/Core>
#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <istream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#endif

namespace ntk_cli {

/// A user-facing error: printed as "ntk: error: <message>", exit status 2.
struct CliError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Parses a whole number (surrounding blanks allowed).  Subnormals and values that round to zero
/// are accepted; overflow (1e400) is not.
inline bool parse_double(const std::string& text, double& value) {
  const std::size_t begin = text.find_first_not_of(" \t\r");
  if (begin == std::string::npos) return false;
  const std::size_t end = text.find_last_not_of(" \t\r");
  const std::string cell = text.substr(begin, end - begin + 1);
  char* stop = nullptr;
  errno = 0;
  value = std::strtod(cell.c_str(), &stop);
  if (stop != cell.c_str() + cell.size()) return false;
  return errno != ERANGE || std::fabs(value) < 1;  // ERANGE with a small value is underflow
}

inline std::vector<std::string> split(const std::string& line, char separator) {
  std::vector<std::string> cells;
  if (line.empty()) return cells;
  std::size_t from = 0;
  for (;;) {
    const std::size_t at = line.find(separator, from);
    cells.push_back(line.substr(from, at == std::string::npos ? std::string::npos : at - from));
    if (at == std::string::npos) break;
    from = at + 1;
  }
  return cells;
}

/// Digits with only number characters around them (1e400, 1.2.3, --1): a mistyped number, not a
/// column name.
inline bool number_like(const std::string& cell) {
  return cell.find_first_of("0123456789") != std::string::npos &&
         cell.find_first_not_of(" \t\r0123456789+-.eE") == std::string::npos;
}

/// Limits of the CSV reader (a cell is a number, so 4 KiB is generous).
inline constexpr std::size_t max_csv_cell = 4096;
inline constexpr std::size_t max_csv_columns = std::size_t{1} << 24;

/// Parses CSV text.  The first non-blank line is a header when every cell of it is non-empty and
/// not a number; any other line is data, and a bad cell in it is an error naming the line.  A UTF-8
/// byte-order mark at the start is skipped.  Blank lines are skipped; CRLF is accepted.
inline Eigen::MatrixXd parse_csv(std::istream& in, const std::string& name) {
  std::streambuf* buffer = in.rdbuf();
  using Traits = std::char_traits<char>;
  std::vector<double> values;
  std::vector<std::string> cells;  // the current line's cells (only kept for the first line)
  std::string cell;
  std::size_t line_number = 1, width = 0, rows = 0;
  bool first_line = true, at_start = true;
  std::vector<double> row;
  auto line_error = [&](const std::string& what) {
    return CliError(name + ": line " + std::to_string(line_number) + ": " + what);
  };
  for (;;) {
    row.clear();
    cells.clear();
    cell.clear();
    bool any = false, blank = true, eof = false, overlong = false;
    std::size_t count = 0;
    std::string bad;
    bool has_bad = false;
    auto finish_cell = [&] {
      ++count;
      if (count > max_csv_columns) throw line_error("more than " + std::to_string(max_csv_columns) + " columns");
      if (overlong) throw line_error("cell longer than " + std::to_string(max_csv_cell) + " bytes");
      if (first_line) cells.push_back(cell);
      if (!has_bad) {
        double v;
        if (parse_double(cell, v)) {
          row.push_back(v);
        } else {
          has_bad = true;
          bad = cell;
        }
      }
      cell.clear();
    };
    for (;;) {
      const int c = buffer ? buffer->sbumpc() : Traits::eof();
      if (c == Traits::eof()) {
        eof = true;
        break;
      }
      any = true;
      const char ch = static_cast<char>(c);
      if (ch == '\n') break;
      if (ch == ',') {
        blank = false;
        finish_cell();
        continue;
      }
      if (ch != ' ' && ch != '\t' && ch != '\r') blank = false;
      if (cell.size() < max_csv_cell)
        cell.push_back(ch);
      else
        overlong = true;
      if (at_start && cell.size() == 3 && cell == "\xEF\xBB\xBF") cell.clear();  // UTF-8 BOM
    }
    at_start = false;
    if (!any && eof) break;
    if (blank) {
      ++line_number;
      if (eof) break;
      continue;
    }
    finish_cell();
    if (first_line) {
      first_line = false;
      bool header = true;
      for (const auto& c : cells) {
        double v;
        if (c.find_first_not_of(" \t\r") == std::string::npos || parse_double(c, v) || number_like(c)) {
          header = false;  // empty, a number, or number-like (1e400, 1.2.3): a data row
          break;
        }
      }
      if (header) {
        ++line_number;
        if (eof) break;
        continue;
      }
    }
    if (has_bad) {
      const std::size_t begin = bad.find_first_not_of(" \t\r");
      if (begin == std::string::npos) throw line_error("empty cell");
      const std::string shown = bad.size() > 40 ? bad.substr(0, 40) + "..." : bad;
      errno = 0;
      char* stop = nullptr;
      const double v = std::strtod(bad.c_str() + begin, &stop);
      if (errno == ERANGE && std::fabs(v) >= 1 && stop != bad.c_str() + begin)
        throw line_error("value out of range '" + shown + "'");
      throw line_error("non-numeric cell '" + shown + "'");
    }
    for (std::size_t j = 0; j < row.size(); ++j)
      if (!std::isfinite(row[j])) throw line_error("non-finite value in column " + std::to_string(j + 1));
    if (rows == 0) width = row.size();
    if (row.size() != width)
      throw line_error("ragged row (" + std::to_string(row.size()) + " cells, expected " + std::to_string(width) + ")");
    values.insert(values.end(), row.begin(), row.end());
    ++rows;
    ++line_number;
    if (eof) break;
  }
  if (in.bad()) throw CliError(name + ": read error");
  if (rows == 0) throw CliError(name + ": no data rows");
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  return Eigen::Map<const RowMajor>(values.data(), static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(width));
}

/// The parsed dictionary of a .npy header.
struct NpyHeader {
  bool f8 = false, fortran = false;
  std::vector<unsigned long long> shape;
};

/// Parses a .npy header dictionary exactly as the format defines it: a Python dict literal with
/// the keys 'descr' (a string: '<f8' or '<f4'), 'fortran_order' (True or False) and 'shape' (a
/// tuple of non-negative integers), each once, an optional trailing comma, then blanks up to the
/// closing newline.
inline NpyHeader parse_npy_header(const std::string& h, const std::string& path) {
  auto bad = [&](const std::string& what) { return CliError(path + ": bad .npy header: " + what); };
  std::size_t i = 0;
  auto skip = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
  };
  auto expect = [&](char c, const char* what) {
    skip();
    if (i >= h.size() || h[i] != c) throw bad(std::string("expected ") + what);
    ++i;
  };
  auto string_literal = [&] {
    skip();
    if (i >= h.size() || (h[i] != '\'' && h[i] != '"')) throw bad("expected a string");
    const char quote = h[i++];
    const std::size_t end = h.find(quote, i);
    if (end == std::string::npos) throw bad("unterminated string");
    std::string s = h.substr(i, end - i);
    i = end + 1;
    return s;
  };
  NpyHeader out;
  bool seen_descr = false, seen_order = false, seen_shape = false;
  expect('{', "'{'");
  for (;;) {
    skip();
    if (i < h.size() && h[i] == '}') break;
    const std::string key = string_literal();
    expect(':', "':'");
    skip();
    if (key == "descr") {
      if (seen_descr) throw bad("'descr' given twice");
      seen_descr = true;
      const std::string d = string_literal();
      if (d == "<f8")
        out.f8 = true;
      else if (d == "<f4")
        out.f8 = false;
      else
        throw CliError(path + ": only little-endian float64 or float32 arrays are supported (descr '" + d + "')");
    } else if (key == "fortran_order") {
      if (seen_order) throw bad("'fortran_order' given twice");
      seen_order = true;
      if (h.compare(i, 4, "True") == 0) {
        out.fortran = true;
        i += 4;
      } else if (h.compare(i, 5, "False") == 0) {
        out.fortran = false;
        i += 5;
      } else {
        throw bad("'fortran_order' must be True or False");
      }
    } else if (key == "shape") {
      if (seen_shape) throw bad("'shape' given twice");
      seen_shape = true;
      expect('(', "a tuple for 'shape'");
      bool comma = false;
      for (;;) {
        skip();
        if (i < h.size() && h[i] == ')') break;
        if (i >= h.size() || h[i] < '0' || h[i] > '9') throw bad("'shape' must hold non-negative integers");
        unsigned long long v = 0;
        while (i < h.size() && h[i] >= '0' && h[i] <= '9') {
          if (v > (ULLONG_MAX - 9) / 10) throw CliError(path + ": array too large");
          v = v * 10 + static_cast<unsigned>(h[i++] - '0');
        }
        out.shape.push_back(v);
        skip();
        if (i < h.size() && h[i] == ',') {
          comma = true;
          ++i;
          continue;
        }
        if (i >= h.size() || h[i] != ')') throw bad("'shape' must hold non-negative integers");
      }
      ++i;  // ')'
      if (out.shape.size() == 1 && !comma) throw bad("'shape' must be a tuple, e.g. (3,)");
    } else {
      throw bad("unexpected key '" + key + "'");
    }
    skip();
    if (i < h.size() && h[i] == ',') {
      ++i;
      continue;
    }
    skip();
    if (i >= h.size() || h[i] != '}') throw bad("expected ',' or '}'");
  }
  ++i;  // '}'
  if (!seen_descr || !seen_order || !seen_shape) throw bad("it must have 'descr', 'fortran_order' and 'shape'");
  while (i < h.size() && (h[i] == ' ' || h[i] == '\t' || h[i] == '\x0c')) ++i;
  if (i + 1 != h.size() || h[i] != '\n')
    throw bad("the header must end with blanks and a newline (wrong header length?)");
  return out;
}

/// Parses .npy bytes (format 1.0/2.0/3.0, '<f8' or '<f4', C or Fortran order, 1-D or 2-D): the
/// header as the format defines it, then exactly the data it announces and nothing after it.
inline Eigen::MatrixXd parse_npy(std::istream& in, const std::string& path) {
  char magic[6];
  if (!in.read(magic, 6) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw CliError(path + ": not a .npy file");
  unsigned char version[2];
  if (!in.read(reinterpret_cast<char*>(version), 2)) throw CliError(path + ": truncated header");
  std::uint32_t header_length = 0;
  if (version[0] == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) throw CliError(path + ": truncated header");
    header_length = static_cast<std::uint32_t>(b[0] | (b[1] << 8));
  } else if (version[0] == 2 || version[0] == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) throw CliError(path + ": truncated header");
    header_length =
        static_cast<std::uint32_t>(b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24));
  } else {
    throw CliError(path + ": unsupported .npy version " + std::to_string(version[0]));
  }
  if (version[1] != 0)
    throw CliError(path + ": unsupported .npy version " + std::to_string(version[0]) + "." +
                   std::to_string(version[1]));
  if (header_length > (1u << 20)) throw CliError(path + ": header too long");
  std::string header(header_length, '\0');
  if (!in.read(&header[0], header_length)) throw CliError(path + ": truncated header");
  const NpyHeader h = parse_npy_header(header, path);
  if (h.shape.empty() || h.shape.size() > 2) throw CliError(path + ": only 1-D and 2-D arrays are supported");
  const unsigned long long rows = h.shape[0], cols = h.shape.size() == 2 ? h.shape[1] : 1;
  if (rows == 0 || cols == 0) throw CliError(path + ": empty array");
  const unsigned long long item = h.f8 ? 8 : 4;
  if (rows > (1ULL << 40) || cols > (1ULL << 40) || rows * cols > (1ULL << 40) / item)
    throw CliError(path + ": array too large (shape " + std::to_string(rows) + " x " + std::to_string(cols) + ")");
  const unsigned long long count = rows * cols;
  // The data must be exactly there before anything is allocated for it.
  const auto here = in.tellg();
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  in.seekg(here);
  if (here < 0 || end < here) throw CliError(path + ": cannot determine the file size");
  const unsigned long long available = static_cast<unsigned long long>(end - here);
  if (available < count * item)
    throw CliError(path + ": truncated data (the header's shape needs " + std::to_string(count * item) +
                   " bytes, the file has " + std::to_string(available) + ")");
  if (available > count * item)
    throw CliError(path + ": " + std::to_string(available - count * item) + " bytes after the data");

  const auto r = static_cast<Eigen::Index>(rows), c = static_cast<Eigen::Index>(cols);
  Eigen::MatrixXd m(r, c);
  // Read in chunks straight into place.
  const std::size_t chunk = 8192;
  std::vector<char> bytes(chunk * item);
  unsigned long long done = 0;
  while (done < count) {
    const std::size_t n = static_cast<std::size_t>(std::min<unsigned long long>(chunk, count - done));
    if (!in.read(bytes.data(), static_cast<std::streamsize>(n * item))) throw CliError(path + ": truncated data");
    for (std::size_t t = 0; t < n; ++t) {
      double v;
      if (h.f8) {
        std::memcpy(&v, bytes.data() + 8 * t, 8);
      } else {
        float f;
        std::memcpy(&f, bytes.data() + 4 * t, 4);
        v = f;
      }
      const unsigned long long k = done + t;
      const Eigen::Index i = static_cast<Eigen::Index>(h.fortran ? k % rows : k / cols);
      const Eigen::Index j = static_cast<Eigen::Index>(h.fortran ? k / rows : k % cols);
      if (!std::isfinite(v))
        throw CliError(path + ": non-finite value at row " + std::to_string(i + 1) + ", column " +
                       std::to_string(j + 1));
      m(i, j) = v;
    }
    done += n;
  }
  return m;
}

#if defined(__unix__) || defined(__APPLE__)

/// An input file opened for reading: refuses a directory, remembers the file's identity (so an
/// output onto it can be refused).
struct InputIdentity {
  dev_t device = 0;
  ino_t inode = 0;
};

inline std::vector<InputIdentity>& input_identities() {
  static std::vector<InputIdentity> ids;
  return ids;
}

/// A std::streambuf over a file descriptor (read-only, buffered, seekable for regular files).
class FdReadBuffer : public std::streambuf {
 public:
  explicit FdReadBuffer(int fd) : m_fd(fd), m_buffer(1 << 16) {}
  ~FdReadBuffer() override { ::close(m_fd); }
  FdReadBuffer(const FdReadBuffer&) = delete;
  FdReadBuffer& operator=(const FdReadBuffer&) = delete;
  bool failed() const { return m_failed; }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    ssize_t n;
    do n = ::read(m_fd, m_buffer.data(), m_buffer.size());
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
      if (n < 0) m_failed = true;
      return traits_type::eof();
    }
    setg(m_buffer.data(), m_buffer.data(), m_buffer.data() + n);
    return traits_type::to_int_type(*gptr());
  }
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override {
    off_type target;
    if (dir == std::ios_base::cur) {
      const off_type position = ::lseek(m_fd, 0, SEEK_CUR);
      if (position < 0) return pos_type(off_type(-1));
      target = position - (egptr() - gptr()) + off;
    } else if (dir == std::ios_base::end) {
      const off_type size = ::lseek(m_fd, 0, SEEK_END);
      if (size < 0) return pos_type(off_type(-1));
      target = size + off;
    } else {
      target = off;
    }
    return seekpos(pos_type(target), std::ios_base::in);
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode) override {
    const off_type r = ::lseek(m_fd, static_cast<off_t>(off_type(pos)), SEEK_SET);
    setg(m_buffer.data(), m_buffer.data(), m_buffer.data());
    return pos_type(r);
  }

 private:
  int m_fd;
  std::vector<char> m_buffer;
  bool m_failed = false;
};

/// Opens an input file: a clear error for a missing file or a directory.
inline int open_input(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CliError(path + ": cannot open file (" + std::strerror(errno) + ")");
  struct stat st;
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw CliError(path + ": cannot open file (is a directory)");
  }
  input_identities().push_back({st.st_dev, st.st_ino});
  return fd;
}

/// Reads a matrix from CSV (or "-" for stdin) or .npy.
inline Eigen::MatrixXd read_matrix(const std::string& path) {
  if (path == "-") return parse_csv(std::cin, "stdin");
  FdReadBuffer buffer(open_input(path));
  std::istream in(&buffer);
  Eigen::MatrixXd m = ends_with(path, ".npy") ? parse_npy(in, path) : parse_csv(in, path);
  if (buffer.failed()) throw CliError(path + ": read error");
  return m;
}

#else
#include <fstream>
inline Eigen::MatrixXd read_matrix(const std::string& path) {
  if (path == "-") return parse_csv(std::cin, "stdin");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CliError(path + ": cannot open file");
  return ends_with(path, ".npy") ? parse_npy(in, path) : parse_csv(in, path);
}
#endif

/// CSV text of a matrix with 17 significant digits, no header, one row at a time to `sink`.
template <class Sink>
void csv_rows(const Eigen::MatrixXd& m, Sink&& sink) {
  char buffer[32];
  std::string line;
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    line.clear();
    for (Eigen::Index j = 0; j < m.cols(); ++j) {
      std::snprintf(buffer, sizeof buffer, "%.17g", m(i, j) + 0.0);  // + 0.0: no "-0"
      if (j) line += ',';
      line += buffer;
    }
    line += '\n';
    sink(line);
  }
}

inline void write_csv(std::ostream& out, const Eigen::MatrixXd& m) {
  csv_rows(m, [&](const std::string& line) { out << line; });
}

/// The .npy preamble (magic, version 1.0, header) for a float64 Fortran-order matrix, padded so the
/// data starts at a multiple of 64 bytes.
inline std::string npy_preamble(Eigen::Index rows, Eigen::Index cols) {
  std::string header = "{'descr': '<f8', 'fortran_order': True, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  const std::uint16_t length = static_cast<std::uint16_t>(header.size());
  const char le[2] = {static_cast<char>(length & 0xff), static_cast<char>(length >> 8)};
  return std::string("\x93NUMPY\x01\x00", 8) + std::string(le, 2) + header;
}

/// Flushes stdout and throws if anything written to it was lost (a full disk, a closed pipe).
inline void finish_stdout() {
  std::cout.flush();
  const bool flushed = std::fflush(stdout) == 0;
  const int error = errno;
  if (!flushed || std::ferror(stdout) || !std::cout)
    throw CliError(std::string("cannot write to standard output") +
                   (error ? std::string(" (") + std::strerror(error) + ")" : std::string()));
}

/// Writes text to stdout, failing on a lost write.
inline void write_stdout(const std::string& text) {
  std::cout << text;
  finish_stdout();
}

#if defined(__unix__) || defined(__APPLE__)

namespace detail {
/// The temporary being written, for the signal handler (async-signal-safe: a fixed buffer).
inline char pending_temporary[PATH_MAX + 1];
inline volatile std::sig_atomic_t pending_set = 0;

inline void remove_pending_and_die(int signal) {
  if (pending_set) ::unlink(pending_temporary);
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

inline void install_signal_handlers() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  for (int s : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction action {};
    action.sa_handler = remove_pending_and_die;
    sigemptyset(&action.sa_mask);
    struct sigaction old {};
    if (::sigaction(s, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;  // nohup keeps ignoring
    ::sigaction(s, &action, nullptr);
  }
}

inline std::string errno_text(int error) {
  return std::string(" (") + std::strerror(error) + ")";
}
}  // namespace detail

/// An output file written atomically (see the top of this file for what happens to an existing
/// target).  Open it before the work so a bad --out fails first; commit() at the end.
class OutputFile {
 public:
  explicit OutputFile(const std::string& path) : m_path(path) {
    struct stat st;
    std::string target = path;
    if (::lstat(path.c_str(), &st) == 0) {
      if (S_ISLNK(st.st_mode)) {
        char* resolved = ::realpath(path.c_str(), nullptr);
        if (!resolved || ::stat(resolved, &st) != 0) {
          std::free(resolved);
          throw CliError(path + ": cannot write file (a symbolic link to nothing)");
        }
        target = resolved;
        std::free(resolved);
      }
      for (const auto& id : input_identities())
        if (id.device == st.st_dev && id.inode == st.st_ino)
          throw CliError(path + ": cannot write file (it is an input; the output would destroy it)");
      if (S_ISDIR(st.st_mode)) throw CliError(path + ": cannot write file (is a directory)");
      if (!S_ISREG(st.st_mode)) {  // a device, FIFO or socket: written in place
        m_fd = ::open(target.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (m_fd < 0) throw CliError(path + ": cannot write file" + detail::errno_text(errno));
        m_in_place = true;
        return;
      }
      if ((st.st_mode & 0222) == 0) throw CliError(path + ": cannot write file (it is read-only)");
      m_mode = st.st_mode & 07777;
      m_keep_mode = true;
    }
    m_target = target;
    const std::size_t slash = target.rfind('/');
    const std::string folder = slash == std::string::npos ? "" : target.substr(0, slash + 1);
    const std::string base = slash == std::string::npos ? target : target.substr(slash + 1);
    std::string pattern = folder + "." + base + ".ntk-XXXXXX";
    if (pattern.size() > PATH_MAX) throw CliError(path + ": cannot write file (path too long)");
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    m_fd = ::mkostemp(name.data(), O_CLOEXEC);  // O_CREAT | O_EXCL: never a planted file or link
    if (m_fd < 0) throw CliError(path + ": cannot write file" + detail::errno_text(errno));
    m_temporary = name.data();
    std::memcpy(detail::pending_temporary, m_temporary.c_str(), m_temporary.size() + 1);
    detail::pending_set = 1;
    detail::install_signal_handlers();
    if (!m_keep_mode) {
      const mode_t mask = ::umask(0);
      ::umask(mask);
      m_mode = 0666 & ~mask;
    }
    ::fchmod(m_fd, m_mode);
  }
  ~OutputFile() { discard(); }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  int fd() const { return m_fd; }
  bool in_place() const { return m_in_place; }
  const std::string& path() const { return m_path; }

  /// Writes all of `data` or throws.
  void write(const char* data, std::size_t size) {
    while (size > 0) {
      const ssize_t n = ::write(m_fd, data, size);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("write failed", n < 0 ? errno : ENOSPC);
      data += n;
      size -= static_cast<std::size_t>(n);
    }
  }
  void write(const std::string& s) { write(s.data(), s.size()); }

  /// Buffered writing (for many small pieces).
  void append(const std::string& s) {
    m_buffer += s;
    if (m_buffer.size() >= (1 << 16)) flush();
  }
  void flush() {
    write(m_buffer.data(), m_buffer.size());
    m_buffer.clear();
  }

  /// Renames the finished file over the target.
  void commit() {
    flush();
    const int fd = m_fd;
    m_fd = -1;
    if (::close(fd) != 0) fail("write failed", errno);
    if (!m_in_place && ::rename(m_temporary.c_str(), m_target.c_str()) != 0) fail("cannot write file", errno);
    forget();
  }

  /// Removes the temporary (idempotent).
  void discard() {
    if (m_fd >= 0) ::close(m_fd);
    m_fd = -1;
    if (!m_temporary.empty()) ::unlink(m_temporary.c_str());
    forget();
  }

  /// Removes the temporary and throws "<path>: what (reason)", the reason errno's text by default.
  [[noreturn]] void fail(const std::string& what, int error, const std::string& reason = "") {
    discard();
    throw CliError(m_path + ": " + what + (reason.empty() ? detail::errno_text(error) : " (" + reason + ")"));
  }

 private:
  void forget() {
    if (!m_temporary.empty()) detail::pending_set = 0;
    m_temporary.clear();
  }

  std::string m_path, m_target, m_temporary, m_buffer;
  int m_fd = -1;
  bool m_in_place = false, m_keep_mode = false;
  mode_t m_mode = 0644;
};

inline void write_npy(OutputFile& out, const Eigen::MatrixXd& m) {
  out.write(npy_preamble(m.rows(), m.cols()));
  out.write(reinterpret_cast<const char*>(m.data()), static_cast<std::size_t>(m.size()) * sizeof(double));
}

/// Writes to an open output (CSV or .npy by its name) and commits it.
inline void write_matrix(OutputFile& out, const Eigen::MatrixXd& m) {
  if (ends_with(out.path(), ".npy"))
    write_npy(out, m);
  else
    csv_rows(m, [&](const std::string& line) { out.append(line); });
  out.commit();
}

/// Writes to stdout ("-" or empty) or to a file, atomically.
inline void write_matrix(const std::string& path, const Eigen::MatrixXd& m) {
  if (path.empty() || path == "-") {
    write_csv(std::cout, m);
    finish_stdout();
    return;
  }
  OutputFile out(path);
  write_matrix(out, m);
}

/// Writes a rows x cols float64 .npy file by letting `fill(Eigen::Map<Eigen::MatrixXd>&)` compute
/// straight into the file's pages (memory-mapped), atomically like write_matrix: a failure in
/// `fill` leaves no file behind.  Large results then need no second copy in memory and no copy into
/// the page cache.  A device or FIFO target is written through a matrix instead.
template <class Fill>
void write_npy_computed(OutputFile& out, Eigen::Index rows, Eigen::Index cols, Fill&& fill) {
  if (out.in_place()) {
    Eigen::MatrixXd m(rows, cols);
    Eigen::Map<Eigen::MatrixXd> view(m.data(), rows, cols);
    fill(view);
    write_matrix(out, m);
    return;
  }
  const std::string preamble = npy_preamble(rows, cols);
  const std::size_t bytes = preamble.size() + static_cast<std::size_t>(rows * cols) * sizeof(double);
  struct statvfs fs;
  if (::fstatvfs(out.fd(), &fs) == 0 &&
      static_cast<double>(bytes) > static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize)) {
    char text[160];
    std::snprintf(text, sizeof text, "needs %.3g GB, %.3g GB free on its file system", static_cast<double>(bytes) / 1e9,
                  static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize) / 1e9);
    out.fail("cannot write file", 0, text);
  }
  // Reserve the blocks first where the platform can (a full disk then fails here, not as SIGBUS
  // inside the mapping).
#if defined(__linux__)
  const int reserve_error = ::posix_fallocate(out.fd(), 0, static_cast<off_t>(bytes));
  if (reserve_error != 0) out.fail("cannot write file", reserve_error);
#endif
  if (::ftruncate(out.fd(), static_cast<off_t>(bytes)) != 0) out.fail("cannot write file", errno);
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, out.fd(), 0);
  if (base == MAP_FAILED) out.fail("cannot write file", errno);
  std::memcpy(base, preamble.data(), preamble.size());
  // The data starts 64-byte aligned inside a page-aligned mapping.
  Eigen::Map<Eigen::MatrixXd> view(reinterpret_cast<double*>(static_cast<char*>(base) + preamble.size()), rows, cols);
  try {
    fill(view);
  } catch (...) {
    ::munmap(base, bytes);
    out.discard();
    throw;
  }
  if (::munmap(base, bytes) != 0) out.fail("cannot write file", errno);
  out.commit();
}

template <class Fill>
void write_npy_computed(const std::string& path, Eigen::Index rows, Eigen::Index cols, Fill&& fill) {
  OutputFile out(path);
  write_npy_computed(out, rows, cols, fill);
}

/// The --out destination, opened before the work: stdout for "" or "-", else an OutputFile.
class Destination {
 public:
  explicit Destination(const std::string& path) {
    if (!path.empty() && path != "-") m_file = std::make_unique<OutputFile>(path);
  }
  bool is_npy_file() const { return m_file && ends_with(m_file->path(), ".npy"); }
  OutputFile& file() { return *m_file; }
  void write(const Eigen::MatrixXd& m) {
    if (m_file) {
      write_matrix(*m_file, m);
    } else {
      write_csv(std::cout, m);
      finish_stdout();
    }
  }

 private:
  std::unique_ptr<OutputFile> m_file;
};

/// The memory this process may use: physical memory, or less under an address-space limit.
inline double memory_limit_bytes() {
  double limit = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  struct rlimit r;
  if (::getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY)
    limit = std::min(limit, static_cast<double>(r.rlim_cur));
  return limit > 0 ? limit : 1e300;
}

/// Refuses, before any work, a job whose memory estimate exceeds what the process may use.
inline void check_memory(double bytes, const std::string& what) {
  const double limit = memory_limit_bytes();
  if (!(bytes <= limit)) {
    char text[160];
    std::snprintf(text, sizeof text, " needs about %.3g GB of memory, more than the %.3g GB available", bytes / 1e9,
                  limit / 1e9);
    throw CliError(what + text);
  }
}

#endif

}  // namespace ntk_cli
