#pragma once
// Matrix input/output for the ntk command-line tool: CSV (comma-separated, optional header row,
// "-" for stdin/stdout) and NumPy .npy (float64/float32, C or Fortran order), chosen by the
// file's extension.  Every failure throws CliError with a one-line message.

#include <Eigen/Core>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
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

inline bool parse_double(const std::string& text, double& value) {
  std::size_t begin = text.find_first_not_of(" \t\r");
  std::size_t end = text.find_last_not_of(" \t\r");
  if (begin == std::string::npos) return false;
  const std::string cell = text.substr(begin, end - begin + 1);
  char* stop = nullptr;
  errno = 0;
  value = std::strtod(cell.c_str(), &stop);
  return stop == cell.c_str() + cell.size() && errno != ERANGE;
}

inline std::vector<std::string> split(const std::string& line, char separator) {
  std::vector<std::string> cells;
  std::string cell;
  std::stringstream stream(line);
  while (std::getline(stream, cell, separator)) cells.push_back(cell);
  if (!line.empty() && line.back() == separator) cells.push_back("");
  return cells;
}

/// Parses CSV text; a first row with a non-numeric cell is a header and is skipped.
inline Eigen::MatrixXd parse_csv(std::istream& in, const std::string& name) {
  std::vector<std::vector<double>> rows;
  std::string line;
  std::size_t line_number = 0, width = 0;
  bool first = true;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const auto cells = split(line, ',');
    std::vector<double> row;
    bool numeric = true;
    std::string bad;
    for (const auto& cell : cells) {
      double v;
      if (!parse_double(cell, v)) {
        numeric = false;
        bad = cell;
        break;
      }
      row.push_back(v);
    }
    if (!numeric) {
      if (first) {  // header row
        first = false;
        continue;
      }
      throw CliError(name + ": line " + std::to_string(line_number) + ": non-numeric cell '" + bad + "'");
    }
    first = false;
    for (std::size_t j = 0; j < row.size(); ++j)
      if (!std::isfinite(row[j]))
        throw CliError(name + ": line " + std::to_string(line_number) + ": non-finite value in column " +
                       std::to_string(j + 1));
    if (rows.empty()) width = row.size();
    if (row.size() != width)
      throw CliError(name + ": line " + std::to_string(line_number) + ": ragged row (" +
                     std::to_string(row.size()) + " cells, expected " + std::to_string(width) + ")");
    rows.push_back(std::move(row));
  }
  if (rows.empty()) throw CliError(name + ": no data rows");
  Eigen::MatrixXd m(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(width));
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t j = 0; j < width; ++j) m(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = rows[i][j];
  return m;
}

/// Parses .npy bytes (format 1.0/2.0/3.0, '<f8' or '<f4', C or Fortran order, 1-D or 2-D).
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
    header_length = static_cast<std::uint32_t>(b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24));
  } else {
    throw CliError(path + ": unsupported .npy version " + std::to_string(version[0]));
  }
  if (header_length > (1u << 20)) throw CliError(path + ": header too long");
  std::string header(header_length, '\0');
  if (!in.read(&header[0], header_length)) throw CliError(path + ": truncated header");
  auto field = [&](const std::string& key) {
    const auto at = header.find("'" + key + "'");
    if (at == std::string::npos) throw CliError(path + ": header lacks '" + key + "'");
    return header.substr(header.find(':', at) + 1);
  };
  const std::string descr = field("descr");
  const bool f8 = descr.find("<f8") != std::string::npos || descr.find("|f8") != std::string::npos;
  const bool f4 = descr.find("<f4") != std::string::npos;
  if (!f8 && !f4) throw CliError(path + ": only little-endian float64 or float32 arrays are supported");
  const bool fortran = field("fortran_order").find("True") < field("fortran_order").find(',');
  std::string shape_text = field("shape");
  shape_text = shape_text.substr(shape_text.find('(') + 1, shape_text.find(')') - shape_text.find('(') - 1);
  std::vector<long long> shape;
  for (const auto& part : split(shape_text, ',')) {
    if (part.find_first_not_of(" ") == std::string::npos) continue;
    char* stop = nullptr;
    const long long v = std::strtoll(part.c_str(), &stop, 10);
    if (v < 0) throw CliError(path + ": bad shape");
    shape.push_back(v);
  }
  if (shape.empty() || shape.size() > 2) throw CliError(path + ": only 1-D and 2-D arrays are supported");
  const long long rows = shape[0], cols = shape.size() == 2 ? shape[1] : 1;
  if (rows == 0 || cols == 0) throw CliError(path + ": empty array");
  if (rows > (1LL << 31) || cols > (1LL << 31) || rows * cols > (1LL << 34)) throw CliError(path + ": array too large");
  const std::size_t count = static_cast<std::size_t>(rows * cols);
  // Check the data is there before allocating for it.
  const auto here = in.tellg();
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  in.seekg(here);
  if (here < 0 || end < here ||
      static_cast<unsigned long long>(end - here) < count * static_cast<unsigned long long>(f8 ? 8 : 4))
    throw CliError(path + ": truncated data (the header's shape needs more bytes than the file has)");
  std::vector<double> values(count);
  if (f8) {
    if (!in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * 8)))
      throw CliError(path + ": truncated data");
  } else {
    std::vector<float> f(count);
    if (!in.read(reinterpret_cast<char*>(f.data()), static_cast<std::streamsize>(count * 4)))
      throw CliError(path + ": truncated data");
    for (std::size_t i = 0; i < count; ++i) values[i] = f[i];
  }
  Eigen::MatrixXd m(rows, cols);
  for (long long i = 0; i < rows; ++i)
    for (long long j = 0; j < cols; ++j)
      m(i, j) = fortran ? values[static_cast<std::size_t>(j * rows + i)] : values[static_cast<std::size_t>(i * cols + j)];
  for (Eigen::Index j = 0; j < m.cols(); ++j)
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      if (!std::isfinite(m(i, j)))
        throw CliError(path + ": non-finite value at row " + std::to_string(i + 1) + ", column " + std::to_string(j + 1));
  return m;
}

inline Eigen::MatrixXd read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CliError(path + ": cannot open file");
  return parse_npy(in, path);
}

/// Reads a matrix from CSV (or "-" for stdin) or .npy.
inline Eigen::MatrixXd read_matrix(const std::string& path) {
  if (ends_with(path, ".npy")) return read_npy(path);
  if (path == "-") return parse_csv(std::cin, "stdin");
  std::ifstream in(path);
  if (!in) throw CliError(path + ": cannot open file");
  return parse_csv(in, path);
}

/// Writes CSV with 17 significant digits, no header.
inline void write_csv(std::ostream& out, const Eigen::MatrixXd& m) {
  char buffer[32];
  std::string line;
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    line.clear();
    for (Eigen::Index j = 0; j < m.cols(); ++j) {
      std::snprintf(buffer, sizeof buffer, "%.17g", m(i, j));
      if (j) line += ',';
      line += buffer;
    }
    line += '\n';
    out << line;
  }
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

inline void write_npy(std::ostream& out, const Eigen::MatrixXd& m) {
  const std::string preamble = npy_preamble(m.rows(), m.cols());
  out.write(preamble.data(), static_cast<std::streamsize>(preamble.size()));
  out.write(reinterpret_cast<const char*>(m.data()), static_cast<std::streamsize>(m.size() * 8));
}

/// Flushes stdout and throws if anything written to it was lost (a full disk, a closed pipe).
inline void finish_stdout() {
  std::cout.flush();
  errno = 0;
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

/// Writes to stdout ("-" or empty) or to a file, atomically: a temporary file renamed into place,
/// so a failure leaves no partial output behind.
inline void write_matrix(const std::string& path, const Eigen::MatrixXd& m) {
  if (path.empty() || path == "-") {
    write_csv(std::cout, m);
    finish_stdout();
    return;
  }
  const std::string temporary = path + ".partial";
  {
    std::ofstream out(temporary, std::ios::binary);
    if (!out) throw CliError(path + ": cannot write file");
    if (ends_with(path, ".npy"))
      write_npy(out, m);
    else
      write_csv(out, m);
    out.flush();
    if (!out) {
      std::remove(temporary.c_str());
      throw CliError(path + ": write failed");
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    throw CliError(path + ": cannot write file");
  }
}

/// Writes a rows x cols float64 .npy file by letting `fill(Eigen::Map<Eigen::MatrixXd>&)` compute
/// straight into the file's pages (memory-mapped where the platform allows, else through a
/// matrix), atomically like write_matrix: a failure in `fill` leaves no file behind.  Large
/// results then need no second copy in memory and no copy into the page cache.
template <class Fill>
void write_npy_computed(const std::string& path, Eigen::Index rows, Eigen::Index cols, Fill&& fill) {
#if defined(__unix__) || defined(__APPLE__)
  const std::string temporary = path + ".partial";
  const std::string preamble = npy_preamble(rows, cols);
  const std::size_t bytes = preamble.size() + static_cast<std::size_t>(rows * cols) * sizeof(double);
  const int fd = ::open(temporary.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0666);
  if (fd < 0) throw CliError(path + ": cannot write file");
  void* base = MAP_FAILED;
  auto discard = [&] {
    if (base != MAP_FAILED) ::munmap(base, bytes);
    ::close(fd);
    std::remove(temporary.c_str());
  };
  // Reserve the blocks first where the platform can (a full disk then fails here, not as SIGBUS
  // inside the mapping).
#if defined(__linux__)
  const int reserve_error = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  if (reserve_error != 0) errno = reserve_error;  // posix_fallocate returns its error
  const bool reserved = reserve_error == 0;
#else
  const bool reserved = true;
#endif
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0 || !reserved ||
      (base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
    const int error = errno;  // before the clean-up's calls can change it
    discard();
    throw CliError(path + ": cannot write file (" + std::strerror(error) + ")");
  }
  std::memcpy(base, preamble.data(), preamble.size());
  // The data starts 64-byte aligned inside a page-aligned mapping.
  Eigen::Map<Eigen::MatrixXd> out(reinterpret_cast<double*>(static_cast<char*>(base) + preamble.size()), rows, cols);
  try {
    fill(out);
  } catch (...) {
    discard();
    throw;
  }
  const bool unmapped = ::munmap(base, bytes) == 0;
  base = MAP_FAILED;
  if (!unmapped || ::close(fd) != 0 || std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    throw CliError(path + ": cannot write file");
  }
#else
  Eigen::MatrixXd out(rows, cols);
  Eigen::Map<Eigen::MatrixXd> view(out.data(), rows, cols);
  fill(view);
  write_matrix(path, out);
#endif
}

}  // namespace ntk_cli
