#pragma once
/// \file mpi.hpp
/// The same kernels and solvers over MPI (include only when linking MPI: CMake target ntk::mpi).
///
/// Model: the training inputs (n x d, a few MB) are replicated on every rank; the n x n Gram
/// matrix is not.  DistributedGram splits the upper triangle of Θ(X, X) into square tiles and
/// gives every rank a contiguous run of them holding the same number of entries (±1 tile), so
/// both the kernel phase and the memory are 1/P of the triangle.  Vectors (n x k blocks) are
/// replicated: a product K·V is every rank's tiles applied to V, then one sum over the ranks
/// (reduce-scatter + all-gather: 2 n k (P − 1)/P scalars sent and received per rank, never O(n²)),
/// which leaves bit-identical results on every rank.  A solver written for a single-process
/// operator therefore runs unchanged on every rank and takes the same decisions everywhere.
///
/// Errors: an exception on one rank must not leave the others blocked in a collective.  Every
/// collective in this header first learns whether any rank failed (a status word rides along with
/// the data, or one small all-reduce), and then every rank throws the same exception: the type and
/// message of the lowest failing rank, with " (rank r of P)" appended when some ranks did not fail,
/// derived from ntk::mpi::CollectiveFailure.
/// ntk::mpi::collective runs any function under that rule.

#include <mpi.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <ctime>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "gram.hpp"
#include "kernel.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ntk {
namespace mpi {

/// This rank's index in comm.
inline int rank(MPI_Comm comm) {
  int r = 0;
  MPI_Comm_rank(comm, &r);
  return r;
}
/// The number of ranks in comm.
inline int size(MPI_Comm comm) {
  int p = 1;
  MPI_Comm_size(comm, &p);
  return p;
}

/// Base of every exception that ntk::mpi raises on all ranks at once (after agreeing on a failure):
/// catch an exception, then dynamic_cast to this to tell a failure every rank knows about from one
/// that happened on this rank alone (which, outside ntk::mpi's collectives, the others cannot know).
class CollectiveFailure {
 public:
  /// The lowest rank on which the failure happened.
  int failing_rank() const { return m_rank; }
  virtual ~CollectiveFailure() = default;

 protected:
  explicit CollectiveFailure(int rank) : m_rank(rank) {}

 private:
  int m_rank;
};

namespace detail {

using ntk::detail::fail;

/// An exception of the standard type E that every rank raised together.
template <class E>
class Raised : public E, public CollectiveFailure {
 public:
  Raised(const std::string& message, int rank) : E(message), CollectiveFailure(rank) {}
};

template <class Scalar>
MPI_Datatype datatype() {
  static_assert(std::is_same_v<Scalar, double> || std::is_same_v<Scalar, float>,
                "ntk::mpi: Scalar must be float or double");
  return std::is_same_v<Scalar, double> ? MPI_DOUBLE : MPI_FLOAT;
}

inline void check_call(int code, const char* function, const char* call) {
  if (code != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    fail<std::runtime_error>(function, call, " failed: ", std::string(text, static_cast<std::size_t>(length)));
  }
}

/// A caught exception, reduced to what can cross a process boundary.
struct Failure {
  enum Kind : int { none = 0, invalid_argument, domain_error, overflow_error, logic_error, bad_alloc, runtime_error };
  int kind = none;
  std::string message;

  bool failed() const { return kind != none; }

  /// The current exception (call inside a catch block).
  static Failure current() {
    Failure f;
    try {
      throw;
    } catch (const std::invalid_argument& e) {
      f = {invalid_argument, e.what()};
    } catch (const std::domain_error& e) {
      f = {domain_error, e.what()};
    } catch (const std::overflow_error& e) {
      f = {overflow_error, e.what()};
    } catch (const std::logic_error& e) {
      f = {logic_error, e.what()};
    } catch (const std::bad_alloc&) {
      f = {bad_alloc, "ntk::mpi: out of memory (std::bad_alloc)"};
    } catch (const std::exception& e) {
      f = {runtime_error, e.what()};
    } catch (...) {
      f = {runtime_error, "ntk::mpi: unknown exception"};
    }
    return f;
  }

  /// Throws the failure as its standard type, marked as raised on every rank.
  [[noreturn]] void raise(int rank) const {
    switch (kind) {
      case invalid_argument:
        throw Raised<std::invalid_argument>(message, rank);
      case domain_error:
        throw Raised<std::domain_error>(message, rank);
      case overflow_error:
        throw Raised<std::overflow_error>(message, rank);
      case logic_error:
        throw Raised<std::logic_error>(message, rank);
      default:
        throw Raised<std::runtime_error>(message, rank);  // bad_alloc included
    }
  }
};

/// Collective: does nothing when `any_failed` is false; otherwise every rank throws the failure of
/// the lowest failing rank.  Every rank must pass the same `any_failed`.
inline void raise_agreed(MPI_Comm comm, const Failure& local, bool any_failed) {
  if (!any_failed) return;
  const int p = size(comm), me = rank(comm);
  // {lowest failing rank, whether every rank failed} in one all-reduce.
  int mine[2] = {local.failed() ? me : p, local.failed() ? 1 : 0}, all[2] = {p, 0};
  MPI_Allreduce(mine, all, 2, MPI_INT, MPI_MIN, comm);
  const int lowest = all[0];
  int header[2] = {local.kind, static_cast<int>(local.message.size())};
  MPI_Bcast(header, 2, MPI_INT, lowest, comm);
  std::string message = local.message;
  message.resize(static_cast<std::size_t>(header[1]));
  MPI_Bcast(message.data(), header[1], MPI_CHAR, lowest, comm);
  // Where it happened, unless it happened everywhere (the same bad argument on every rank).
  if (p > 1 && all[1] == 0) message += " (rank " + std::to_string(lowest) + " of " + std::to_string(p) + ")";
  Failure{header[0], message}.raise(lowest);
}

/// Collective: every rank learns whether any rank failed (one small all-reduce), then as
/// raise_agreed.
inline void agree(MPI_Comm comm, const Failure& local) {
  int mine = local.failed() ? 1 : 0, any = 0;
  check_call(MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm), "mpi::agree", "MPI_Allreduce");
  raise_agreed(comm, local, any != 0);
}

/// Scalars moved by sum_replicated, for the communication counters.
struct Traffic {
  double sent = 0, received = 0;  ///< scalars this rank sent and received, as the algorithm needs
  double seconds = 0;             ///< wall time in the collectives
  long calls = 0;
};

/// Collective: data[0, count) <- the sum over the ranks, bit-identical everywhere (each segment is
/// summed on one rank by MPI_Reduce_scatter, then all-gathered).  A status scalar rides along, so
/// a failure on any rank (local.failed()) makes every rank throw it, without a separate message.
template <class Scalar>
void sum_replicated(MPI_Comm comm, Scalar* data, Eigen::Index count, const Failure& local, Traffic* traffic = nullptr) {
  const int p = size(comm);
  const Eigen::Index total = count + 1;
  if (total > INT_MAX)
    fail<std::overflow_error>("mpi::sum_replicated", "more than INT_MAX scalars in one sum (got ", total, ")");
  const auto start = std::chrono::steady_clock::now();
  std::vector<Scalar> buffer(static_cast<std::size_t>(total));
  if (local.failed())
    std::fill(buffer.begin(), buffer.end(), Scalar(0));
  else
    std::copy(data, data + count, buffer.begin());
  buffer.back() = local.failed() ? Scalar(1) : Scalar(0);
  std::vector<int> counts(static_cast<std::size_t>(p)), offsets(static_cast<std::size_t>(p));
  for (int r = 0; r < p; ++r) {
    const Eigen::Index begin = total * r / p, end = total * (r + 1) / p;
    offsets[static_cast<std::size_t>(r)] = static_cast<int>(begin);
    counts[static_cast<std::size_t>(r)] = static_cast<int>(end - begin);
  }
  const int me = rank(comm);
  const std::size_t mine = static_cast<std::size_t>(me);
  std::vector<Scalar> segment(static_cast<std::size_t>(std::max(counts[mine], 1)));
  check_call(MPI_Reduce_scatter(buffer.data(), segment.data(), counts.data(), datatype<Scalar>(), MPI_SUM, comm),
             "mpi::sum_replicated", "MPI_Reduce_scatter");
  check_call(MPI_Allgatherv(segment.data(), counts[mine], datatype<Scalar>(), buffer.data(), counts.data(),
                            offsets.data(), datatype<Scalar>(), comm),
             "mpi::sum_replicated", "MPI_Allgatherv");
  if (traffic) {
    const double share = static_cast<double>(total - counts[mine]);
    traffic->sent += 2 * share;  // reduce-scatter and all-gather, each (P − 1)/P of the data
    traffic->received += 2 * share;
    traffic->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ++traffic->calls;
  }
  raise_agreed(comm, local, buffer.back() != Scalar(0));
  std::copy(buffer.begin(), buffer.begin() + count, data);
}

/// Balanced contiguous split of [0, n) into p parts.
inline std::pair<Eigen::Index, Eigen::Index> even_range(Eigen::Index n, int p, int r) {
  return {n * r / p, n * (r + 1) / p};
}

}  // namespace detail

/// Runs `f` on every rank (collective): when it throws on any rank, every rank throws the same
/// exception (type and message of the lowest failing rank, "(rank r of P)" appended), so no rank is
/// left waiting in a later collective.  Use it around anything that may fail on some ranks only,
/// such as each rank reading a shared file.
template <class F>
void collective(MPI_Comm comm, F&& f) {
  detail::Failure local;
  try {
    f();
  } catch (...) {
    local = detail::Failure::current();
  }
  detail::agree(comm, local);
}

/// Collective: copies `m` from `root` to every rank (shape and entries).  Use it to read inputs
/// once: the root reads inside collective(), then broadcasts.
template <class Scalar>
void broadcast(MPI_Comm comm, Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>& m, int root = 0) {
  long long shape[2] = {static_cast<long long>(m.rows()), static_cast<long long>(m.cols())};
  detail::check_call(MPI_Bcast(shape, 2, MPI_LONG_LONG, root, comm), "mpi::broadcast", "MPI_Bcast");
  if (rank(comm) != root) m.resize(static_cast<Eigen::Index>(shape[0]), static_cast<Eigen::Index>(shape[1]));
  // In chunks: MPI counts are int.
  const Eigen::Index total = m.size(), chunk = Eigen::Index(1) << 28;
  for (Eigen::Index begin = 0; begin < total; begin += chunk)
    detail::check_call(MPI_Bcast(m.data() + begin, static_cast<int>(std::min(chunk, total - begin)),
                                 detail::datatype<Scalar>(), root, comm),
                       "mpi::broadcast", "MPI_Bcast");
}

/// Collective: `read()` (returning a Matrix) runs on `root` only, its result is broadcast; an
/// exception there is raised on every rank.  Inputs are read once, not P times.
template <class Read>
auto read_on_root(MPI_Comm comm, Read&& read, int root = 0) {
  decltype(read()) m;
  collective(comm, [&] {
    if (rank(comm) == root) m = read();
  });
  broadcast(comm, m, root);
  return m;
}

/// Options of DistributedGram.
struct DistributedOptions {
  /// Side of the square tiles the triangle is split into (and the granularity of the balance).
  Eigen::Index tile = 256;

  void check(const char* function) const { ntk::detail::check_at_least(function, "tile", tile, Eigen::Index(1)); }
};

/// One tile of the upper triangle: rows [row, row + rows), columns [col, col + cols), row <= col
/// (diagonal tiles have row == col and are stored as full symmetric squares).
struct Tile {
  Eigen::Index row = 0, col = 0, rows = 0, cols = 0;
  Eigen::Index offset = 0;  ///< first scalar of the tile in the rank's storage (column-major)
  bool diagonal() const { return row == col; }
  /// Entries of the triangle this tile holds (the diagonal tile counts one triangle).
  Eigen::Index entries() const { return diagonal() ? rows * (rows + 1) / 2 : rows * cols; }
};

/// The tiles of the upper triangle of an n x n matrix, in column-major order (tile column J, then
/// tile rows I <= J), split into `ranks` contiguous runs of equal entry counts: the first tile
/// of rank r is where the running entry count first reaches r/P of the triangle.  Returns rank r's
/// tiles with their storage offsets.
inline std::vector<Tile> triangle_share(Eigen::Index n, Eigen::Index tile, int ranks, int r) {
  const Eigen::Index blocks = (n + tile - 1) / tile;
  const double triangle = static_cast<double>(n) * static_cast<double>(n + 1) / 2;
  const double begin = triangle * r / ranks, end = triangle * (r + 1) / ranks;
  std::vector<Tile> out;
  double before = 0;  // entries of the tiles preceding the current one
  Eigen::Index offset = 0;
  for (Eigen::Index J = 0; J < blocks; ++J)
    for (Eigen::Index I = 0; I <= J; ++I) {
      Tile t;
      t.row = I * tile;
      t.col = J * tile;
      t.rows = std::min(tile, n - t.row);
      t.cols = std::min(tile, n - t.col);
      const double e = static_cast<double>(t.entries());
      // A tile belongs to the rank whose range holds its midpoint.
      const double middle = before + e / 2;
      before += e;
      if (middle >= begin && (middle < end || r == ranks - 1)) {
        t.offset = offset;
        offset += t.rows * t.cols;
        out.push_back(t);
      }
    }
  return out;
}

/// A symmetric Gram matrix Θ(X, X) or Σ(X, X) (n x n) spread over the ranks of a communicator:
/// each rank computes and stores its share of the upper triangle (triangle_share) with the tile
/// engine of kernel_into.  Products with n x k blocks are collective and return the full product
/// on every rank.  Satisfies the Gram operator concept (rows(), cols(), apply(), diagonal(),
/// columns()), so the single-process solvers run on it unchanged, called on every rank with the
/// same arguments.
///
/// Memory per rank: n(n + 1)/(2P) scalars (± one tile) for the Gram, the replicated inputs
/// (n d) and O(n k T) for a product with T threads.  Compute per rank: 1/P of the triangle's
/// dual evaluations; a product costs 2 n² k / P flops plus the sum (2 n k (P − 1)/P scalars).
///
/// Storage_ = float with Scalar_ = double (the single-process PackedGram<double, float>): entries
/// computed in double and stored rounded to float (2⁻²⁴ relative each), half the memory; products
/// in double.
template <class Scalar_ = double, class Storage_ = Scalar_>
class DistributedGram {
 public:
  using Scalar = Scalar_;
  using Storage = Storage_;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using StoredMatrix = Eigen::Matrix<Storage, Eigen::Dynamic, Eigen::Dynamic>;

  /// Collective.  x: the training inputs (n x d, one sample per row), identical on every rank;
  /// kind: ntk or nngp.  kernel()'s exceptions on every rank (an error on one rank is raised on
  /// all, see the file comment).
  template <class Arch, class D>
  DistributedGram(MPI_Comm comm, const Arch& arch, const Eigen::MatrixBase<D>& x, KernelKind kind,
                  const KernelOptions& kernel_options = {}, const DistributedOptions& options = {})
      : m_comm(comm), m_n(x.rows()) {
    static_assert(std::is_same_v<typename D::Scalar, Scalar>,
                  "ntk::DistributedGram: x must have the Gram matrix's scalar type");
    const char* fn = "DistributedGram";
    const int p = size(comm), me = rank(comm);
    collective(comm, [&] {
      options.check(fn);
      if (kind == KernelKind::both) ntk::detail::fail<std::invalid_argument>(fn, "kind must be nngp or ntk (got both)");
      ntk::detail::check_request(fn, arch, x, x, kernel_options);
      // One copy of the inputs, shared by the kernel phase and later column requests.
      const auto shared = std::make_shared<const Matrix>(x);
      const Matrix& inputs = *shared;
      m_tiles = triangle_share(m_n, options.tile, p, me);
      Eigen::Index total = 0;
      for (const Tile& t : m_tiles) total += t.rows * t.cols;
      m_storage.resize(std::max<Eigen::Index>(total, 1));
      const auto start = std::chrono::steady_clock::now();
      const std::clock_t cpu_start = std::clock();
      compute_tiles(arch, inputs, kind, kernel_options);
      m_kernel_cpu_seconds = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
      for (const Tile& t : m_tiles) m_entries += t.entries();
      m_kernel_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      // Diagonal and column access: the whole inputs are replicated, so these are recomputed
      // through the engine rather than gathered.
      m_diagonal = (kind == KernelKind::ntk ? kernel_diagonal(arch, inputs, kernel_options).ntk
                                            : kernel_diagonal(arch, inputs, kernel_options).nngp)
                       .col(0);
      m_columns = [arch, shared, kind, kernel_options](Eigen::Index r0, Eigen::Index r1,
                                                       const std::vector<Eigen::Index>& index) {
        const Matrix& points = *shared;
        Matrix pivots(static_cast<Eigen::Index>(index.size()), points.cols());
        for (std::size_t c = 0; c < index.size(); ++c) pivots.row(static_cast<Eigen::Index>(c)) = points.row(index[c]);
        Matrix out(r1 - r0, pivots.rows());
        kernel_into(arch, points.middleRows(r0, r1 - r0), pivots, kind, out, kernel_options);
        return out;
      };
    });
  }

  Eigen::Index rows() const { return m_n; }
  Eigen::Index cols() const { return m_n; }
  MPI_Comm communicator() const { return m_comm; }

  /// Collective: out = K v for v of n x k, identical on every rank (v must be identical too).
  /// An exception on any rank (including a wrong shape) is raised on every rank.
  void apply(const Eigen::Ref<const Matrix>& v, Eigen::Ref<Matrix> out) const {
    detail::Failure local;
    const Eigen::Index k = v.cols();
    Matrix sum;
    try {
      if (v.rows() != m_n || out.rows() != m_n || out.cols() != k)
        ntk::detail::fail<std::invalid_argument>("DistributedGram::apply", "v and out must have ", m_n,
                                                 " rows and equal columns (got v ", v.rows(), " x ", k, ", out ",
                                                 out.rows(), " x ", out.cols(), ")");
      if (m_fault_after >= 0 && m_fault_after-- == 0)
        ntk::detail::fail<std::runtime_error>("DistributedGram::apply", "injected fault");
      sum = Matrix::Zero(m_n, k);
      const auto start = std::chrono::steady_clock::now();
      local_product(v, sum);
      m_product_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    } catch (...) {
      local = detail::Failure::current();
      sum = Matrix::Zero(m_n, k);
    }
    detail::sum_replicated(m_comm, sum.data(), sum.size(), local, &m_traffic);
    out = sum;
  }
  /// K v, returned (collective).
  Matrix operator*(const Eigen::Ref<const Matrix>& v) const {
    Matrix out(m_n, v.cols());
    apply(v, out);
    return out;
  }

  /// For failure tests: this rank's local part of the apply() after `after` more products throws
  /// std::runtime_error("...injected fault"), which every rank then raises (see the file comment).
  void inject_fault(long after) const { m_fault_after = after; }

  /// The diagonal K(i, i) (replicated; no communication).
  const Vector& diagonal() const { return m_diagonal; }

  static_assert(std::is_same_v<Scalar, double> || std::is_same_v<Scalar, float>,
                "ntk::DistributedGram: Scalar must be float or double");
  static_assert(std::is_same_v<Storage, Scalar> || (std::is_same_v<Scalar, double> && std::is_same_v<Storage, float>),
                "ntk::DistributedGram: Storage must be Scalar, or float with Scalar double");

  /// Collective: out = K(:, index) (n x |index|), identical on every rank; each rank computes n/P
  /// rows through the engine (the inputs are replicated), then the blocks are summed (gathered).
  void columns(const std::vector<Eigen::Index>& index, Eigen::Ref<Matrix> out) const {
    detail::Failure local;
    const Eigen::Index m = static_cast<Eigen::Index>(index.size());
    Matrix sum;
    try {
      if (out.rows() != m_n || out.cols() != m)
        ntk::detail::fail<std::invalid_argument>("DistributedGram::columns", "out must be ", m_n, " x ", m, " (got ",
                                                 out.rows(), " x ", out.cols(), ")");
      for (Eigen::Index i : index)
        if (i < 0 || i >= m_n)
          ntk::detail::fail<std::invalid_argument>("DistributedGram::columns", "index out of range (got ", i,
                                                   " for n = ", m_n, ")");
      sum = Matrix::Zero(m_n, m);
      const auto [r0, r1] = detail::even_range(m_n, size(m_comm), rank(m_comm));
      if (r1 > r0 && m > 0) sum.middleRows(r0, r1 - r0) = m_columns(r0, r1, index);
    } catch (...) {
      local = detail::Failure::current();
      sum = Matrix::Zero(m_n, m);
    }
    detail::sum_replicated(m_comm, sum.data(), sum.size(), local, &m_traffic);
    out = sum;
  }
  /// K(:, index), returned (collective).
  Matrix columns(const std::vector<Eigen::Index>& index) const {
    Matrix out(m_n, static_cast<Eigen::Index>(index.size()));
    columns(index, out);
    return out;
  }

  /// Collective: the whole matrix on every rank (for tests and small n only).
  Matrix dense() const {
    detail::Failure local;
    Matrix out;
    try {
      out = Matrix::Zero(m_n, m_n);
      for (const Tile& t : m_tiles) {
        const Eigen::Map<const StoredMatrix> stored(m_storage.data() + t.offset, t.rows, t.cols);
        const Matrix tile = stored.template cast<Scalar>();
        out.block(t.row, t.col, t.rows, t.cols) = tile;
        if (!t.diagonal()) out.block(t.col, t.row, t.cols, t.rows) = tile.transpose();
      }
    } catch (...) {
      local = detail::Failure::current();
      out = Matrix::Zero(m_n, m_n);
    }
    detail::sum_replicated(m_comm, out.data(), out.size(), local);
    return out;
  }

  /// This rank's tiles.
  const std::vector<Tile>& tiles() const { return m_tiles; }
  /// Entries of the triangle this rank computed.
  Eigen::Index local_entries() const { return m_entries; }
  /// Scalars this rank stores for the Gram.
  Eigen::Index local_storage() const { return m_storage.size(); }
  /// Wall time of this rank's kernel phase (tiles only).
  double kernel_seconds() const { return m_kernel_seconds; }
  /// Processor time of this rank's kernel phase (all its threads; without waiting in collectives).
  double kernel_cpu_seconds() const { return m_kernel_cpu_seconds; }
  /// Wall time of this rank's local tile products so far.
  double product_seconds() const { return m_product_seconds; }
  /// Communication of the products and column requests so far.
  const detail::Traffic& traffic() const { return m_traffic; }

 private:
  /// The kernel phase: tiles shared among threads (one tile per thread at a time, each through
  /// kernel_into on one thread), so there is one parallel region, not one per tile.
  template <class Arch>
  void compute_tiles(const Arch& arch, const Matrix& inputs, KernelKind kind, const KernelOptions& kernel_options) {
    const int count = static_cast<int>(m_tiles.size());
    KernelOptions serial = kernel_options;
#if defined(_OPENMP)
    const int threads = kernel_options.threads > 0 ? kernel_options.threads : omp_get_max_threads();
    serial.threads = 1;
#endif
    std::exception_ptr error;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
#endif
    for (int i = 0; i < count; ++i) {
      try {
        const Tile& t = m_tiles[static_cast<std::size_t>(i)];
        Eigen::Map<StoredMatrix> stored(m_storage.data() + t.offset, t.rows, t.cols);
        const auto fill = [&](auto& out) {
          if (t.diagonal())
            kernel_into(arch, inputs.middleRows(t.row, t.rows), kind, out, serial);
          else
            kernel_into(arch, inputs.middleRows(t.row, t.rows), inputs.middleRows(t.col, t.cols), kind, out, serial);
        };
        if constexpr (std::is_same_v<Storage, Scalar>) {
          fill(stored);
        } else {  // computed in Scalar, stored rounded
          Matrix out(t.rows, t.cols);
          fill(out);
          stored = out.template cast<Storage>();
        }
      } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(ntk_mpi_tile_error)
#endif
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  }

  void local_product(const Eigen::Ref<const Matrix>& v, Matrix& sum) const {
    const Eigen::Index k = v.cols();
    const int count = static_cast<int>(m_tiles.size());
#if defined(_OPENMP)
    const int threads = std::max(1, std::min(omp_get_max_threads(), count));
#else
    const int threads = 1;
#endif
    std::vector<Matrix> partial(static_cast<std::size_t>(threads - 1));
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
#if defined(_OPENMP)
      const int id = omp_get_thread_num();
#else
      const int id = 0;
#endif
      Matrix* acc = &sum;
      if (id > 0) {
        partial[static_cast<std::size_t>(id - 1)] = Matrix::Zero(m_n, k);
        acc = &partial[static_cast<std::size_t>(id - 1)];
      }
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
      for (int i = 0; i < count; ++i) {
        const Tile& t = m_tiles[static_cast<std::size_t>(i)];
        const Eigen::Map<const StoredMatrix> stored(m_storage.data() + t.offset, t.rows, t.cols);
        // float storage: the tile widened once per product (a tile-sized temporary per thread)
        const std::conditional_t<std::is_same_v<Storage, Scalar>, const Eigen::Map<const StoredMatrix>&, const Matrix>
            tile = stored.template cast<Scalar>();
        acc->middleRows(t.row, t.rows).noalias() += tile * v.middleRows(t.col, t.cols);
        if (!t.diagonal()) acc->middleRows(t.col, t.cols).noalias() += tile.transpose() * v.middleRows(t.row, t.rows);
      }
    }
    for (const Matrix& m : partial)
      if (m.size() != 0) sum += m;  // (a team smaller than asked for, e.g. nested, leaves some empty)
  }

  MPI_Comm m_comm;
  Eigen::Index m_n = 0, m_entries = 0;
  std::vector<Tile> m_tiles;
  Eigen::Matrix<Storage, Eigen::Dynamic, 1> m_storage;
  Vector m_diagonal;
  std::function<Matrix(Eigen::Index, Eigen::Index, const std::vector<Eigen::Index>&)> m_columns;
  double m_kernel_seconds = 0, m_kernel_cpu_seconds = 0;
  mutable double m_product_seconds = 0;
  mutable detail::Traffic m_traffic;
  mutable long m_fault_after = -1;
};

namespace detail {

/// The body of cross_kernel_times for any kind of architecture: check() throws for bad inputs,
/// fill(test, train, target) writes the kernel between test and training rows into target.
template <class DT, class DX, class DC, class Check, class Fill>
Eigen::Matrix<typename DX::Scalar, Eigen::Dynamic, Eigen::Dynamic> blocked_cross_times(
    MPI_Comm comm, const char* fn, const Eigen::MatrixBase<DT>& x_test, const Eigen::MatrixBase<DX>& x_train,
    KernelKind kind, const Eigen::MatrixBase<DC>& alpha, Eigen::Index block, const Check& check, const Fill& fill) {
  using Matrix = Eigen::Matrix<typename DX::Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Failure local;
  Matrix out;
  try {
    check();
    ntk::detail::check_rows(fn, "alpha", alpha, x_train.rows());
    if (kind == KernelKind::both) ntk::detail::fail<std::invalid_argument>(fn, "kind must be nngp or ntk (got both)");
    ntk::detail::check_at_least(fn, "block", block, Eigen::Index(1));
    out = Matrix::Zero(x_test.rows(), alpha.cols());
    const auto [r0, r1] = even_range(x_train.rows(), size(comm), rank(comm));
    if (r1 > r0) {
      const Matrix train = x_train.middleRows(r0, r1 - r0);
      const Matrix coefficients = alpha.middleRows(r0, r1 - r0);
      Matrix kernel_block(std::min(block, x_test.rows()), r1 - r0);
      for (Eigen::Index t0 = 0; t0 < x_test.rows(); t0 += block) {
        const Eigen::Index rows = std::min(block, x_test.rows() - t0);
        auto target = kernel_block.topRows(rows);
        const Matrix test = x_test.middleRows(t0, rows);
        fill(test, train, target);
        out.middleRows(t0, rows).noalias() = target * coefficients;
      }
    }
  } catch (...) {
    local = Failure::current();
    out = Matrix::Zero(x_test.rows(), alpha.cols());
  }
  sum_replicated(comm, out.data(), out.size(), local);
  return out;
}

}  // namespace detail

/// Collective: Σ^L or Θ^L (kind) between test rows x_test (m x d) and training rows x (n x d)
/// times C (n x c), the distributed cross_kernel_times of solvers.hpp: each rank takes n/P training
/// rows and the test points in blocks of `block`, so no m x n matrix exists (memory per rank
/// O(block · n/P)); the partial products are summed.  Identical on every rank.
template <class Arch, class DT, class DX, class DC>
Eigen::Matrix<typename DX::Scalar, Eigen::Dynamic, Eigen::Dynamic> cross_kernel_times(
    MPI_Comm comm, const Arch& arch, const Eigen::MatrixBase<DT>& x_test, const Eigen::MatrixBase<DX>& x_train,
    KernelKind kind, const Eigen::MatrixBase<DC>& alpha, const KernelOptions& kernel_options = {},
    Eigen::Index block = 1024) {
  const char* fn = "mpi::cross_kernel_times";
  return detail::blocked_cross_times(
      comm, fn, x_test, x_train, kind, alpha, block,
      [&] { ntk::detail::check_request(fn, arch, x_test, x_train, kernel_options); },
      [&](const auto& test, const auto& train, auto& target) {
        kernel_into(arch, test, train, kind, target, kernel_options);
      });
}

}  // namespace mpi
}  // namespace ntk
