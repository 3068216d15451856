// The distributed Gram operator (ntk/mpi.hpp) against the single-process kernels, at whatever
// number of ranks mpiexec started.  Only non-aborting CHECKs: every rank must reach every
// collective.
#include <ntk/activations.hpp>
#include <ntk/gram.hpp>
#include <ntk/kernel.hpp>
#include <ntk/layers.hpp>
#include <ntk/mpi.hpp>

#include <fstream>
#include <numeric>
#include <stdexcept>
#include <string>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

using Matrix = Eigen::MatrixXd;
using ntk_test::normal_matrix;
const MPI_Comm world = MPI_COMM_WORLD;

double relative(const Matrix& a, const Matrix& b) {
  return (a - b).norm() / std::max(b.norm(), 1e-300);
}

/// Catches the exception every rank must throw; returns its message ("" when none was thrown).
template <class Exception, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const Exception& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "";
}

static_assert(ntk::is_gram_operator_v<ntk::mpi::DistributedGram<double>>,
              "DistributedGram models the Gram operator concept");

}  // namespace

TEST_CASE("Triangle share: every tile on exactly one rank, entry counts equal within one tile", "[mpi]") {
  for (Eigen::Index n : {1, 7, 100, 1000, 8000})
    for (Eigen::Index tile : {16, 64, 256})
      for (int ranks : {1, 2, 3, 7, 16}) {
        const Eigen::Index blocks = (n + tile - 1) / tile;
        std::vector<int> owner(static_cast<std::size_t>(blocks * blocks), 0);
        Eigen::Index total = 0, smallest = n * n, largest = 0;
        for (int r = 0; r < ranks; ++r) {
          Eigen::Index entries = 0, offset = 0;
          bool contiguous = true;
          for (const auto& t : ntk::mpi::triangle_share(n, tile, ranks, r)) {
            ++owner[static_cast<std::size_t>((t.row / tile) * blocks + t.col / tile)];
            entries += t.entries();
            contiguous = contiguous && t.offset == offset;
            offset += t.rows * t.cols;
          }
          CHECK(contiguous);
          total += entries;
          smallest = std::min(smallest, entries);
          largest = std::max(largest, entries);
        }
        CHECK(total == n * (n + 1) / 2);
        bool once = true;
        for (Eigen::Index I = 0; I < blocks; ++I)
          for (Eigen::Index J = 0; J < blocks; ++J)
            once = once && owner[static_cast<std::size_t>(I * blocks + J)] == (I <= J ? 1 : 0);
        CHECK(once);
        // Balanced to one tile's entries whenever there are more tiles than ranks.
        if (blocks * (blocks + 1) / 2 >= 4 * ranks) CHECK(largest - smallest <= 2 * tile * tile);
      }
}

TEST_CASE("Distributed Gram equals the single-process kernel to rounding, every rank holding 1/P", "[mpi]") {
  const int p = ntk::mpi::size(world);
  const auto net = ntk::mlp(ntk::Relu{}, 3, 0, 1.4, 0.2);
  const Matrix x = normal_matrix(ntk_test::scaled(301, 40), 5, 11);
  const Eigen::Index n = x.rows();
  ntk::mpi::DistributedOptions options;
  options.tile = 32;  // not a divisor of n: ragged edge tiles
  for (auto kind : {ntk::KernelKind::ntk, ntk::KernelKind::nngp}) {
    const ntk::mpi::DistributedGram<> gram(world, net, x, kind, {}, options);
    const Matrix reference = kind == ntk::KernelKind::ntk ? ntk::ntk_kernel(net, x) : ntk::nngp_kernel(net, x);
    CHECK(relative(gram.dense(), reference) < 1e-14);
    CHECK((gram.diagonal() - reference.diagonal()).cwiseAbs().maxCoeff() <= 1e-13 * reference.diagonal().maxCoeff());
    // This rank's share of the triangle, within two tiles of 1/P.
    const double share = static_cast<double>(gram.local_entries()) / (double(n) * double(n + 1) / 2);
    CHECK(std::abs(share - 1.0 / p) <= 2.0 * 32 * 32 / (double(n) * double(n + 1) / 2) + 1e-12);
    // Products with a block of k right-hand sides and with columns.
    const Matrix v = normal_matrix(n, 4, 12);
    CHECK(relative(gram * v, reference * v) < 1e-14);
    const std::vector<Eigen::Index> pick = {0, 5, n - 1, 17};
    const Matrix columns = gram.columns(pick);
    for (std::size_t c = 0; c < pick.size(); ++c)
      CHECK(relative(columns.col(static_cast<Eigen::Index>(c)), reference.col(pick[c])) < 1e-14);
  }
}

TEST_CASE("Distributed Gram with float storage: entries rounded to float, products in double", "[mpi]") {
  const auto net = ntk::mlp(ntk::Relu{}, 3, 0, 1.4, 0.2);
  const Matrix x = normal_matrix(ntk_test::scaled(301, 40), 5, 13);
  const Eigen::Index n = x.rows();
  ntk::mpi::DistributedOptions options;
  options.tile = 32;
  const ntk::mpi::DistributedGram<double, float> gram(world, net, x, ntk::KernelKind::ntk, {}, options);
  const ntk::mpi::DistributedGram<> exact(world, net, x, ntk::KernelKind::ntk, {}, options);
  const Matrix reference = ntk::ntk_kernel(net, x);
  const Matrix stored = gram.dense();
  // Every entry is the double one rounded to float: within 2^-24 relative, and not exact.
  CHECK(((stored - reference).cwiseAbs().array() <= reference.cwiseAbs().array() * 0x1p-24).all());
  CHECK(relative(stored, reference) > 1e-12);
  CHECK(((stored.cast<float>().cast<double>() - stored).cwiseAbs().maxCoeff()) == 0.0);
  const Matrix v = normal_matrix(n, 3, 14);
  CHECK(relative(gram * v, stored * v) < 1e-14);
  CHECK(relative(gram * v, exact * v) < 1e-6);
  CHECK(gram.local_storage() == exact.local_storage());
}

TEST_CASE("Distributed products are bit-identical on every rank and communicate O(n k) per rank", "[mpi]") {
  const int p = ntk::mpi::size(world);
  const auto net = ntk::mlp(ntk::Erf{}, 2);
  const Matrix x = normal_matrix(200, 3, 21);
  const ntk::mpi::DistributedGram<> gram(world, net, x, ntk::KernelKind::ntk, {}, {});
  const Matrix v = normal_matrix(200, 3, 22);
  Matrix product = gram * v, root = product;
  ntk::mpi::broadcast(world, root, 0);
  CHECK((product - root).cwiseAbs().maxCoeff() == 0.0);
  // 2 (n k + 1)(P − 1)/P scalars each way per product (reduce-scatter + all-gather), to within
  // the rounding of the segment split.
  const auto& traffic = gram.traffic();
  CHECK(traffic.calls == 1);
  const double expected = 2.0 * (200 * 3 + 1) * (p - 1) / p;
  CHECK(std::abs(traffic.sent - expected) <= 2.0);
}

TEST_CASE("Distributed test kernel product equals kappa(x, X) alpha from the dense kernel", "[mpi]") {
  const auto net = ntk::mlp(ntk::Relu{}, 2);
  const Matrix x = normal_matrix(150, 4, 31), xt = normal_matrix(37, 4, 32), alpha = normal_matrix(150, 2, 33);
  const Matrix got = ntk::mpi::cross_kernel_times(world, net, xt, x, ntk::KernelKind::ntk, alpha, {}, 10);
  CHECK(relative(got, ntk::ntk_kernel(net, xt, x) * alpha) < 1e-14);
}

TEST_CASE("A bad coefficient matrix on one rank fails the distributed test product on every rank", "[mpi][errors]") {
  const int p = ntk::mpi::size(world), me = ntk::mpi::rank(world);
  const auto net = ntk::mlp(ntk::Relu{}, 2);
  const Matrix x = normal_matrix(40, 3, 34), xt = normal_matrix(9, 3, 35);
  // The last rank's alpha has one row too few; the others compute their share and meet it in the sum.
  const Matrix alpha = normal_matrix(me == p - 1 ? 39 : 40, 2, 36);
  const std::string message = message_of<std::invalid_argument>(
      [&] { (void)ntk::mpi::cross_kernel_times(world, net, xt, x, ntk::KernelKind::ntk, alpha, {}, 4); });
  CHECK(message.find("ntk::mpi::cross_kernel_times: alpha must have 40 rows (got 39)") == 0);
  const std::string both = message_of<std::invalid_argument>([&] {
    (void)ntk::mpi::cross_kernel_times(world, net, xt, x, ntk::KernelKind::both, Matrix(normal_matrix(40, 2, 37)));
  });
  CHECK(both.find("ntk::mpi::cross_kernel_times: kind must be nngp or ntk") == 0);
  // Nothing is left half-done: the next product is exact.
  const Matrix good = normal_matrix(40, 2, 38);
  CHECK(relative(ntk::mpi::cross_kernel_times(world, net, xt, x, ntk::KernelKind::ntk, good, {}, 4),
                 ntk::ntk_kernel(net, xt, x) * good) < 1e-14);
}

TEST_CASE("A bad argument on one rank raises the same exception on every rank", "[mpi][errors]") {
  const int p = ntk::mpi::size(world), me = ntk::mpi::rank(world);
  const auto net = ntk::mlp(ntk::Relu{}, 2);
  const Matrix x = normal_matrix(50, 3, 41);
  const ntk::mpi::DistributedGram<> gram(world, net, x, ntk::KernelKind::ntk);
  // The last rank passes a vector of the wrong length; the others are already in the sum.
  const Matrix v = normal_matrix(me == p - 1 ? 49 : 50, 2, 42);
  const std::string message = message_of<std::invalid_argument>([&] { (void)(gram * v); });
  CHECK(message.find("ntk::DistributedGram::apply: v and out must have 50 rows and equal columns (got v 49 x 2") == 0);
  if (p > 1)
    CHECK(message.find("(rank " + std::to_string(p - 1) + " of " + std::to_string(p) + ")") != std::string::npos);
  // The operator still works afterwards (no collective left half-done).
  const Matrix w = normal_matrix(50, 2, 43);
  CHECK(relative(gram * w, ntk::ntk_kernel(net, x) * w) < 1e-14);
}

TEST_CASE("A bad input file on one rank ends a collective read with one error on every rank", "[mpi][errors]") {
  const int p = ntk::mpi::size(world), me = ntk::mpi::rank(world);
  const std::string good = "ntk_mpi_test_input.csv";
  if (me == 0) std::ofstream(good) << "1,2\n3,4\n";
  MPI_Barrier(world);
  // Each rank reads "its" file; the last one names a file that does not exist.
  const std::string path = me == p - 1 ? "ntk_mpi_no_such_file.csv" : good;
  const std::string message = message_of<std::runtime_error>([&] {
    ntk::mpi::collective(world, [&] {
      std::ifstream in(path);
      if (!in) throw std::runtime_error("ntk::read: cannot open '" + path + "'");
    });
  });
  CHECK(message.find("ntk::read: cannot open 'ntk_mpi_no_such_file.csv'") == 0);
  // Marked as known to every rank, with the rank it came from.
  int from = -1;
  try {
    ntk::mpi::collective(world, [&] {
      if (me == p - 1) throw std::logic_error("ntk::test: late");
    });
  } catch (const std::logic_error& e) {
    if (const auto* c = dynamic_cast<const ntk::mpi::CollectiveFailure*>(&e)) from = c->failing_rank();
  }
  CHECK(from == p - 1);
  // The kernel's own checks: a non-finite input on one rank only.
  Matrix x = normal_matrix(20, 2, 51);
  if (me == p - 1) x(3, 1) = std::numeric_limits<double>::quiet_NaN();
  const auto net = ntk::mlp(ntk::Relu{}, 2);
  const std::string nan_message =
      message_of<std::domain_error>([&] { ntk::mpi::DistributedGram<> gram(world, net, x, ntk::KernelKind::ntk); });
  CHECK(nan_message.find("non-finite entry at (3, 1)") != std::string::npos);
}

TEST_CASE("Broadcast copies shape and entries from the root", "[mpi]") {
  Matrix m;
  if (ntk::mpi::rank(world) == 0) m = normal_matrix(13, 7, 61);
  ntk::mpi::broadcast(world, m, 0);
  CHECK(m.rows() == 13);
  CHECK(m.cols() == 7);
  CHECK(relative(m, normal_matrix(13, 7, 61)) == 0.0);
}

TEST_CASE("An exception on one rank in the middle of an iteration ends it on every rank", "[mpi][errors]") {
  const int p = ntk::mpi::size(world);
  const auto net = ntk::mlp(ntk::Relu{}, 2);
  const Matrix x = normal_matrix(80, 3, 101);
  const ntk::mpi::DistributedGram<> gram(world, net, x, ntk::KernelKind::ntk);
  if (ntk::mpi::rank(world) == p - 1) gram.inject_fault(3);
  // Power iteration: the 4th product fails on the last rank; every rank must leave the loop there.
  Matrix v = Matrix::Ones(80, 1);
  int done = 0;
  const std::string message = message_of<std::runtime_error>([&] {
    for (; done < 10; ++done) v = (gram * v).normalized();
  });
  CHECK(done == 3);
  CHECK(message.find("ntk::DistributedGram::apply: injected fault") == 0);
}

TEST_CASE("read_on_root reads on one rank and raises its error on every rank", "[mpi][errors]") {
  int calls = 0;
  const Matrix m = ntk::mpi::read_on_root(world, [&] {
    ++calls;
    return Matrix(normal_matrix(4, 3, 71));
  });
  CHECK(calls == (ntk::mpi::rank(world) == 0 ? 1 : 0));
  CHECK(relative(m, normal_matrix(4, 3, 71)) == 0.0);
  const std::string message = message_of<std::invalid_argument>([&] {
    (void)ntk::mpi::read_on_root(world, []() -> Matrix { throw std::invalid_argument("ntk::read: ragged row 3"); });
  });
  CHECK(message ==
        "ntk::read: ragged row 3" +
            std::string(ntk::mpi::size(world) > 1 ? " (rank 0 of " + std::to_string(ntk::mpi::size(world)) + ")" : ""));
}
