#pragma once
// Progress lines on stderr for the commands that can run long (kernel, predict), and the Gram
// matrix filled by block columns so that progress can be reported per tile.
#include <ntk/kernel.hpp>

#include <Eigen/Core>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace ntk_cli {

/// Progress lines on stderr (never in the output): tiles with an ETA, iterations with the
/// residual, at most one line a second.  By default only when stderr is a terminal, and not during
/// the first second of a command (notes wait and come out with the first later line), so short
/// runs and logs stay clean; --progress prints them from the start wherever stderr goes; --quiet
/// turns everything off.
class Progress {
 public:
  Progress(bool quiet, bool immediate)
      : m_quiet(quiet),
        m_immediate(immediate),
        m_terminal(::isatty(STDERR_FILENO) == 1),
        m_program(std::chrono::steady_clock::now()) {}
  void start(const std::string& label) {
    m_label = label;
    m_start = std::chrono::steady_clock::now();
    m_printed = false;
  }
  void tiles(double done, double total) {
    const double elapsed = seconds(m_start);
    const double eta = done > 0 ? elapsed * (total - done) / done : 0;
    char line[256];
    std::snprintf(line, sizeof line, "ntk: %s %5.1f%% (%.1f s, ETA %.0f s)", m_label.c_str(), 100 * done / total,
                  elapsed, eta);
    emit(line, done >= total);
  }
  void iteration(Eigen::Index it, double residual) {
    char line[256];
    std::snprintf(line, sizeof line, "ntk: %s iteration %ld residual %.3e (%.1f s)", m_label.c_str(),
                  static_cast<long>(it), residual, seconds(m_start));
    emit(line, false);
  }
  void note(const std::string& text) {
    if (m_quiet) return;
    m_pending.push_back("ntk: " + text);
    if (active()) flush();
  }

 private:
  static double seconds(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
  }
  bool active() const { return m_immediate || (m_terminal && seconds(m_program) >= 1); }
  void flush() {
    for (const auto& line : m_pending) std::fprintf(stderr, "%s\n", line.c_str());
    m_pending.clear();
  }
  void emit(const char* line, bool last) {
    if (m_quiet || !active()) return;
    const auto now = std::chrono::steady_clock::now();
    if (!last && m_printed && std::chrono::duration<double>(now - m_last).count() < 1) return;
    flush();
    std::fprintf(stderr, "%s\n", line);
    m_last = now;
    m_printed = true;
  }

  bool m_quiet, m_immediate, m_terminal;
  std::chrono::steady_clock::time_point m_program, m_start, m_last;
  std::string m_label;
  std::vector<std::string> m_pending;
  bool m_printed = false;
};

/// out = the Gram matrix of the rows of x (n x n, column-major, a Matrix or a Map), by block
/// columns of the upper triangle (one progress line per block): the rectangle above the diagonal
/// block, then the diagonal block by the engine's symmetric path, so no entry is computed twice;
/// then mirrored.
template <class Net, class Out>
void gram_into(const Net& net, const Eigen::MatrixXd& x, ntk::KernelKind kind, const ntk::KernelOptions& options,
               Progress& progress, Out& out) {
  const Eigen::Index n = x.rows(), b = 1024;
  const double total = 0.5 * static_cast<double>(n) * static_cast<double>(n + 1);
  progress.start("kernel tiles");
  Eigen::MatrixXd tile;
  for (Eigen::Index c0 = 0; c0 < n; c0 += b) {
    const Eigen::Index c1 = std::min(n, c0 + b), w = c1 - c0;
    if (c0 > 0) {
      tile.resize(c0, w);
      ntk::kernel_into(net, x.topRows(c0), x.middleRows(c0, w), kind, tile, options);
      out.block(0, c0, c0, w) = tile;
    }
    tile.resize(w, w);
    ntk::kernel_into(net, x.middleRows(c0, w), kind, tile, options);
    out.block(c0, c0, w, w) = tile;
    progress.tiles(0.5 * static_cast<double>(c1) * static_cast<double>(c1 + 1), total);
  }
  out.template triangularView<Eigen::StrictlyLower>() = out.transpose();
}

/// out = the kernel between the rows of x1 and x2 (n1 x n2), by block columns with progress.
template <class Net, class Out>
void cross_into(const Net& net, const Eigen::MatrixXd& x1, const Eigen::MatrixXd& x2, ntk::KernelKind kind,
                const ntk::KernelOptions& options, Progress& progress, Out& out) {
  const Eigen::Index n2 = x2.rows(), b = 1024;
  progress.start("kernel tiles");
  Eigen::MatrixXd tile;
  for (Eigen::Index c0 = 0; c0 < n2; c0 += b) {
    const Eigen::Index c1 = std::min(n2, c0 + b);
    tile.resize(x1.rows(), c1 - c0);
    ntk::kernel_into(net, x1, x2.middleRows(c0, c1 - c0), kind, tile, options);
    out.middleCols(c0, c1 - c0) = tile;
    progress.tiles(static_cast<double>(c1), static_cast<double>(n2));
  }
}

}  // namespace ntk_cli
