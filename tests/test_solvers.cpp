#include <Eigen/SVD>
#include <ntk/dynamics.hpp>
#include <ntk/gram.hpp>
#include <ntk/kernel.hpp>
#include <ntk/network.hpp>
#include <ntk/solvers.hpp>

#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

using Matrix = Eigen::MatrixXd;
using Vector = Eigen::VectorXd;
using Index = Eigen::Index;
using ntk_test::normal_matrix;

double relative(const Matrix& a, const Matrix& b) {
  return (a - b).norm() / std::max(b.norm(), 1e-300);
}

const auto relu3 = ntk::mlp(ntk::Relu{}, 3, 0, std::sqrt(2.0), 0.1);

/// True when f throws E whose message contains `part`.
template <class E, class F>
bool throws_with(F&& f, const std::string& part) {
  try {
    f();
  } catch (const E& e) {
    return std::string(e.what()).find(part) != std::string::npos;
  }
  return false;
}

std::string temp_path(const char* name) {
  return std::string("/tmp/ntk_test_") + name + "_" + std::to_string(reinterpret_cast<std::uintptr_t>(&relu3));
}

/// For each (n, block) shape, thread count, layout (column-major and 512-row panels) and k: a random
/// symmetric g with no structure (entries of both signs, every one of them counts) stored in a
/// PackedGram of double and one of float, and
/// an n x k block v with an outer stride other than n; calls check(g, g_float, v, out, out_float)
/// with the two products (g_float: the entries float storage holds).
template <class Check>
void packed_products(std::initializer_list<std::pair<Index, Index>> shapes, std::initializer_list<int> thread_counts,
                     std::initializer_list<Index> ks, unsigned seed, Check&& check) {
  for (const auto& [n, block] : shapes) {
    const Matrix a = normal_matrix(n, n, seed);
    const Matrix g = a + a.transpose();
    const Matrix g_float = g.cast<float>().cast<double>();
    const auto fill = [&](Index c0, Index c1, Eigen::Ref<Matrix> out) { out = g.block(0, c0, c1, c1 - c0); };
    for (const int threads : thread_counts)
      for (const Index panel : {Index(0), ntk::detail::gram_panel_rows}) {
        const ntk::PackedGramOptions options{block, "", false, threads, panel};
        ntk::PackedGram<double, double> packed(n, options);
        packed.fill(fill);
        ntk::PackedGram<double, float> packed_float(n, options);
        packed_float.fill(fill);
        for (const Index k : ks) {
          INFO("n " << n << " block " << block << " threads " << threads << " panel " << panel << " k " << k);
          const Matrix wide = normal_matrix(n + 3, k, seed + 1);
          const auto v = wide.topRows(n);
          Matrix out(n, k), out_float(n, k);
          packed.apply(v, out);
          packed_float.apply(v, out_float);
          check(g, g_float, v, out, out_float);
        }
      }
  }
}

}  // namespace

TEST_CASE("Gram operators: dense packed file-backed and matrix-free products agree with the dense matrix to rounding") {
  const Index n = ntk_test::scaled(700, 60), d = 9;  // n not a multiple of the block widths
  const Matrix x = normal_matrix(n, d, 11);
  const Matrix g = ntk::ntk_kernel(relu3, x);
  const Matrix v = normal_matrix(n, 7, 12);
  const Matrix reference = g * v;
  std::vector<Index> idx{0, n - 1, n / 2, 3};
  Matrix cols_ref(n, 4);
  for (int c = 0; c < 4; ++c) cols_ref.col(c) = g.col(idx[static_cast<std::size_t>(c)]);
  auto check = [&](const auto& op, double tol) {
    Matrix out(n, 7);
    op.apply(v, out);
    CHECK(relative(out, reference) < tol);
    CHECK(relative(op.diagonal(), g.diagonal()) < tol);
    Matrix cols(n, 4);
    op.columns(idx, cols);
    CHECK(relative(cols, cols_ref) < tol);
  };
  check(ntk::DenseGram<>(g), 1e-14);
  ntk::PackedGramOptions small;
  small.block = 64;
  check(ntk::packed_gram(relu3, x, ntk::KernelKind::ntk, {}, small), 1e-13);
  check(ntk::packed_gram(relu3, x, ntk::KernelKind::ntk), 1e-13);
  ntk::PackedGramOptions file = small;
  file.file = temp_path("packed");
  {
    const auto mapped = ntk::packed_gram(relu3, x, ntk::KernelKind::ntk, {}, file);
    check(mapped, 1e-13);
    std::FILE* f = std::fopen(file.file.c_str(), "rb");
    CHECK(f != nullptr);  // the file exists while the operator lives
    if (f) std::fclose(f);
  }
  CHECK(std::fopen(file.file.c_str(), "rb") == nullptr);  // and is removed afterwards
  // float storage: entries rounded to 2^-24 relative
  check(ntk::packed_gram<float>(relu3, x, ntk::KernelKind::ntk, {}, small), 3e-7);
  check(ntk::MatrixFreeGram(relu3, x, ntk::KernelKind::ntk, {}, 100), 1e-13);
  // the type-erased view forwards to the operator it views
  const auto packed_float = ntk::packed_gram<float>(relu3, x, ntk::KernelKind::ntk, {}, small);
  check(ntk::GramRef<double>(packed_float), 3e-7);
  const ntk::MatrixFreeGram free(relu3, x, ntk::KernelKind::ntk, {}, 100);
  check(ntk::GramRef<double>(free), 1e-13);
  CHECK(ntk::GramRef<double>(free).rows() == n);
  const Matrix nngp = ntk::nngp_kernel(relu3, x);
  Matrix out(n, 7);
  ntk::MatrixFreeGram(relu3, x, ntk::KernelKind::nngp, {}, 100).apply(v, out);
  CHECK(relative(out, nngp * v) < 1e-13);
}

TEST_CASE("Gram operators: the packed product's register-blocked kernel handles every k, tail and diagonal block") {
  // A symmetric matrix with no structure (entries of both signs, every one of them counts): a
  // skipped or doubled diagonal block, row tail (rows % packet), column tail (w % 4) or pass of
  // right-hand sides changes the product by far more than rounding.  n = 301 with blocks 64 and 37
  // puts the diagonal inside the row chunks at c0 = 64, 37, 74, ...; n = 1001 with the default
  // block leaves a last block of width 489; n = 2101 with blocks of 701 puts the diagonal inside
  // the 512-row chunks of long_chunks (c0 = 701, 1402) and leaves a last chunk of 53 rows.
  packed_products({{301, 64}, {301, 37}, {1001, 512}, {2101, 701}}, {1, 2}, {1, 2, 3, 4, 7, 10, 16, 17}, 51,
                  [](const Matrix& g, const Matrix& g_float, const Eigen::Ref<const Matrix>& v, const Matrix& out,
                     const Matrix& out_float) {
                    CHECK(relative(out, g * v) <= 1e-13);
                    CHECK(relative(out_float, g_float * v) <= 1e-13);  // products in double of the rounded entries
                    CHECK(relative(out_float, g * v) <= 1e-6);         // which are within 2^-24 of g
                  });
}

TEST_CASE("Gram operators: a block column's product is the same with long chunks and with prefetched short ones") {
  // PackedGram::apply takes one of the two read orders by processor (detail::long_chunks_pay());
  // both run here, on block columns of n = 2,101 (512-row chunks for the long ones) with the
  // diagonal block at row 0, at a chunk boundary (512) and inside chunks (701, 1402); widths and
  // chunk tails (701, 589, 189, 77, 53 rows) leave row tails for any packet size up to 8 and
  // column tails for groups of 3, 4 and 6; k = 1 to 5 reaches every kernel shape of both orders,
  // k = 5, 10 and 16 the long order's 3, 5 and 8 passes with the L2 prefetch of the next group
  // (8 > 6 columns: its last passes prefetch nothing).  Layouts: one column-major matrix
  // (MatrixFreeGram's tiles) and PackedGram's panels of 512 rows, whose last panel (189, 77, 378
  // and 53 rows) has its own column stride, and of 1,024 (chunks of both orders inside a panel,
  // the next chunk in another).  In builds with assertions, every prefetched address is checked to
  // lie in the block column.
  const Index n = 2101;
  const Matrix a = normal_matrix(n, n, 61);
  const Matrix g = a + a.transpose();
  for (const auto& [c0, c1] : {std::pair<Index, Index>{0, 701}, {512, 1101}, {701, 1402}, {1402, 2101}}) {
    const Index w = c1 - c0;
    const Matrix r = g.block(0, c0, c1, w);
    std::vector<std::pair<ntk::detail::BlockLayout, std::vector<double>>> layouts;
    for (const Index panel : {Index(0), Index(512), Index(1024)}) {
      const ntk::detail::BlockLayout layout{c1, w, panel};
      std::vector<double> stored(static_cast<std::size_t>(c1 * w), std::numeric_limits<double>::quiet_NaN());
      for (Index j = 0; j < w; ++j)
        for (Index i = 0; i < c1; ++i) stored[layout.offset(i, j)] = r(i, j);
      layouts.emplace_back(layout, std::move(stored));
    }
    for (const Index k : {1, 2, 3, 4, 5, 10, 16}) {
      const Matrix wide = normal_matrix(n + 5, k, 62);
      const auto v = wide.topRows(n);
      Matrix expected = Matrix::Zero(n, k);
      expected.topRows(c1) += r * v.middleRows(c0, w);
      expected.middleRows(c0, w) += r.topRows(c0).transpose() * v.topRows(c0);
      for (const bool long_chunks : {false, true})
        for (const auto& [layout, stored] : layouts) {  // (an entry the layout maps nowhere stays NaN)
          INFO("c0 " << c0 << " k " << k << " long chunks " << long_chunks << " panel " << layout.panel);
          Matrix acc = Matrix::Zero(n, k);
          ntk::detail::GramScratch<double> scratch;
          ntk::detail::accumulate_block_column<double, double>(stored.data(), layout, c0, v, acc, scratch, long_chunks);
          CHECK(relative(acc, expected) <= 1e-13);
        }
    }
  }
}

TEST_CASE("Gram operators: packed columns are the stored entries, from every block column") {
  // Column j comes from its own block column (rows 0 .. c1 - 1) and from row j of every later one:
  // pivots on both sides of block boundaries, the first and last, and a repeated one, with 1-3
  // threads, column-major block columns and panels of 512 and 1,024 rows (n = 2,101 with blocks of
  // 701: pivots in three panels above a block column's diagonal block, and panels of 512 rows that
  // end inside blocks); double storage gives the entries exactly, float the float-rounded ones.
  for (const auto& [n, block] : {std::pair<Index, Index>{7, 512}, {301, 37}, {301, 64}, {1001, 512}, {2101, 701}}) {
    const Matrix a = normal_matrix(n, n, 81);
    const Matrix g = a + a.transpose();
    const auto fill = [&](Index c0, Index c1, Eigen::Ref<Matrix> out) { out = g.block(0, c0, c1, c1 - c0); };
    std::vector<Index> idx{0, n - 1, std::min(block, n - 1), std::min(block - 1, n - 1), n / 2, n / 3, 0};
    for (const auto& [threads, panel] : {std::pair<int, Index>{1, 0}, {2, 512}, {3, 1024}}) {
      INFO("n " << n << " block " << block << " threads " << threads << " panel " << panel);
      const ntk::PackedGramOptions options{block, "", false, threads, panel};
      ntk::PackedGram<double, double> packed(n, options);
      packed.fill(fill);
      ntk::PackedGram<double, float> packed_float(n, options);
      packed_float.fill(fill);
      const double nan = std::numeric_limits<double>::quiet_NaN();  // an entry left unwritten fails
      Matrix cols = Matrix::Constant(n, static_cast<Index>(idx.size()), nan), cols_float = cols;
      packed.columns(idx, cols);
      packed_float.columns(idx, cols_float);
      for (std::size_t c = 0; c < idx.size(); ++c) {
        CHECK(cols.col(static_cast<Index>(c)) == g.col(idx[c]));
        CHECK(cols_float.col(static_cast<Index>(c)) == g.col(idx[c]).cast<float>().cast<double>());
      }
    }
  }
}

TEST_CASE(
    "Gram operators: every entry of the packed product is within the summation error bound of the dense product") {
  // Elementwise: an entry of G v is a sum of n products, so any summation order (blocked, FMA,
  // split between threads) is within γ_n Σ_j |G(i, j)| |v(j, q)| of the exact value, γ_n = n u /
  // (1 − n u); the dense reference is too, so the two differ by at most 2 γ_n (|G| |v|)(i, q).  A
  // skipped, doubled or misplaced entry changes an entry by about |G(i, j) v(j, q)| ≈ 1, far above
  // that bound (≈ 1e-10 here).  Shapes: n = 7 (fewer rows than a packet: scalar tails only), block
  // widths 1 (only single columns), 6 (one whole group of 6 columns), 13 (6 + 6 + 1), 37 and 64
  // (the diagonal inside a row chunk, w % 6 = 1 and 4), 512 (a last block of width 489);
  // k = 1 (the 4-column path) and k = 2..17 (the 6-column path, passes of 1 and 2 right-hand
  // sides); 1, 2 and 3 threads (uneven splits of the block columns); double and float storage.
  const double u = std::numeric_limits<double>::epsilon() / 2;
  packed_products({{7, 512}, {301, 1}, {301, 6}, {301, 13}, {301, 37}, {301, 64}, {1001, 512}}, {1, 2, 3},
                  {1, 2, 3, 5, 10, 12, 17}, 61,
                  [&](const Matrix& g, const Matrix& g_float, const Eigen::Ref<const Matrix>& v, const Matrix& out,
                      const Matrix& out_float) {
                    const double n = static_cast<double>(g.rows()), gamma = n * u / (1 - n * u);
                    const Matrix bound = 2 * gamma * (g.cwiseAbs() * v.cwiseAbs());
                    CHECK(((out - g * v).cwiseAbs().array() <= bound.array()).all());
                    const Matrix bound_float = 2 * gamma * (g_float.cwiseAbs() * v.cwiseAbs());
                    CHECK(((out_float - g_float * v).cwiseAbs().array() <= bound_float.array()).all());
                  });
}

TEST_CASE("Gram operators: a packed product given fewer threads than it asks for is still exact") {
  // PackedGram::apply keeps one accumulator per requested thread.  Inside an outer parallel region
  // with nested parallelism off its team has one thread and the other accumulators stay empty:
  // they must be skipped, not summed (summing them read a null buffer).
  const Index n = 301;
  const Matrix a = normal_matrix(n, n, 71);
  const Matrix g = a + a.transpose();
  ntk::PackedGram<double> packed(n, ntk::PackedGramOptions{64, "", false, 2});
  packed.fill([&](Index c0, Index c1, Eigen::Ref<Matrix> out) { out = g.block(0, c0, c1, c1 - c0); });
  const Matrix v = normal_matrix(n, 3, 72);
  Matrix out = Matrix::Constant(n, 3, std::numeric_limits<double>::quiet_NaN());
#if defined(_OPENMP)
  const int levels = omp_get_max_active_levels();
  omp_set_max_active_levels(1);
#pragma omp parallel num_threads(2)
#pragma omp single
  packed.apply(v, out);
  omp_set_max_active_levels(levels);
#else
  packed.apply(v, out);
#endif
  CHECK(relative(out, g * v) <= 1e-13);
}

TEST_CASE("Gram operators: bad construction is rejected naming the function") {
  const Matrix x = normal_matrix(10, 3, 1);
  ntk::PackedGramOptions bad;
  bad.block = 0;
  CHECK_THROWS_AS(ntk::PackedGram<>(10, bad), std::invalid_argument);
  // panel −1 resolves to 512, or to column-major on AMD; other valid values are kept
  CHECK(ntk::PackedGram<>(10).options().panel == (ntk::detail::long_chunks_pay() ? 512 : 0));
  for (const Index panel : {0, 512, 1024}) {
    ntk::PackedGramOptions kept;
    kept.panel = panel;
    CHECK(ntk::PackedGram<>(10, kept).options().panel == panel);
  }
  for (const Index panel : {-2, 100, 1000}) {
    ntk::PackedGramOptions bad_panel;
    bad_panel.panel = panel;
    CHECK(throws_with<std::invalid_argument>([&] { ntk::PackedGram<>(10, bad_panel); },
                                             "ntk::PackedGram: panel must be"));
  }
  CHECK_THROWS_AS(ntk::packed_gram(relu3, x, ntk::KernelKind::both), std::invalid_argument);
  ntk::PackedGramOptions nowhere;
  nowhere.file = "/nonexistent-dir/gram.bin";
  CHECK(throws_with<std::invalid_argument>([&] { ntk::PackedGram<>(10, nowhere); },
                                           "ntk::PackedGram: cannot create file"));
  CHECK_THROWS_AS(ntk::MatrixFreeGram(relu3, x, ntk::KernelKind::both), std::invalid_argument);
  const Matrix rect(3, 4);
  CHECK_THROWS_AS(ntk::DenseGram<>(rect), std::invalid_argument);
}

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

/// A training set, its Gram matrix, the test-train kernel, targets and initial outputs.
struct Regression {
  Matrix g, gt, y, f0, f0t;
};

Regression analytic_regression(Index n, Index m) {
  Regression r;
  const Matrix x = normal_matrix(n, 20, 31), xt = normal_matrix(m, 20, 32);
  r.g = ntk::ntk_kernel(relu3, x);
  r.gt = ntk::ntk_kernel(relu3, xt, x);
  r.y = normal_matrix(n, 3, 33);
  r.f0 = 0.1 * normal_matrix(n, 3, 34);
  r.f0t = 0.1 * normal_matrix(m, 3, 35);
  return r;
}

Regression empirical_regression(Index n, Index m) {
  Regression r;
  const Matrix x = normal_matrix(n, 5, 41), xt = normal_matrix(m, 5, 42);
  const auto arch = ntk::mlp(ntk::Erf{}, 2, 64, 1.5, 0.1, 2);
  const ntk::Network<ntk::Mlp<ntk::Erf>> net(arch, 5, 43);
  r.g = net.empirical_ntk(x, x);
  r.gt = net.empirical_ntk(xt, x);
  r.y = normal_matrix(n, 2, 44);
  r.f0 = net.forward(x);
  r.f0t = net.forward(xt);
  return r;
}

/// Every iterative path against the dense eigendecomposition, for one regression problem.
void check_against_eigen(const Regression& r, double ridge) {
  const Index n = r.g.rows();
  const ntk::DenseGram<> dense(r.g);
  ntk::PackedGram<> packed(n, ntk::PackedGramOptions{128, "", false, 0});
  packed.fill([&](Index c0, Index c1, Eigen::Ref<Matrix> out) { out = r.g.block(0, c0, c1, c1 - c0); });
  const double top = ntk::largest_eigenvalue(dense);
  const Matrix z = r.f0 - r.y;
  for (auto model : {ntk::TimeModel::continuous, ntk::TimeModel::discrete}) {
    ntk::DynamicsOptions options;
    options.time = model;
    options.learning_rate = 1.0 / (top + ridge);  // a stable step for gradient descent
    options.diag_reg = ridge;
    options.f0 = r.f0;
    const ntk::LinearizedDynamics<> eigen(r.g, r.y, options);
#if __has_include(<Spectra/SymEigsSolver.h>)
    CHECK(std::fabs(top + ridge - eigen.eigenvalues().maxCoeff()) <= 1e-9 * top);  // Lanczos vs dense
#else  // without Spectra: 200 power iterations, raised by 5% (solvers.hpp)
    CHECK(std::fabs(top + ridge - eigen.eigenvalues().maxCoeff()) <= 0.06 * top);
#endif
    const auto projection = eigen.project(r.gt, r.f0t);
    ntk::ChebyshevOptions cheb;
    cheb.tolerance = 1e-10;
    ntk::SolverInfo info;
    const std::vector<double> times{1, 10, 100};
    const auto factors = ntk::dynamics_factor(packed, z, times, options.learning_rate, model, ridge, cheb, &info);
    CHECK(info.residual <= 1e-9);
    for (std::size_t i = 0; i < times.size(); ++i) {
      INFO("model " << static_cast<int>(model) << " t " << times[i] << " ridge " << ridge << " degree "
                    << info.iterations);
      const Matrix predicted = r.f0t - r.gt * factors[i];
      CHECK(relative(predicted, eigen.test_predictions(projection, times[i])) <= 1e-6);
      CHECK(relative(r.y + z - r.g * factors[i] - ridge * factors[i], eigen.train_predictions(times[i])) <= 1e-6);
    }
    if (model == ntk::TimeModel::discrete) {
      // The discrete factor is a polynomial of degree t - 1: the expansion is exact there.
      CHECK(info.iterations <= 100);
    }
    if (ridge > 0) {  // t = inf
      const Matrix reference = eigen.test_predictions(projection, inf);
      ntk::CgOptions cg;
      cg.tolerance = 1e-12;
      cg.preconditioner_rank = 100;
      ntk::SolverInfo cg_info;
      const Matrix alpha = ntk::cg_solve(packed, z, ridge, cg, &cg_info);
      CHECK(cg_info.converged);
      CHECK(cg_info.residual <= 1e-11);
      CHECK(relative(r.f0t - r.gt * alpha, reference) <= 1e-8);
      const Matrix direct = ntk::cholesky_solve(r.g, z, ridge);
      CHECK(relative(r.f0t - r.gt * direct, reference) <= 1e-8);
      ntk::DynamicsOptions fast = options;
      fast.infinite_time_only = true;
      const ntk::LinearizedDynamics<> cholesky(r.g, r.y, fast);
      CHECK(cholesky.uses_cholesky());
      CHECK(relative(cholesky.test_predictions(r.gt, inf, r.f0t), reference) <= 1e-8);
      CHECK(relative(cholesky.train_predictions(inf), eigen.train_predictions(inf)) <= 1e-8);
      // plain CG (no preconditioner) reaches the same answer in more iterations
      cg.preconditioner_rank = 0;
      ntk::SolverInfo plain;
      const Matrix alpha_plain = ntk::cg_solve(packed, z, ridge, cg, &plain);
      CHECK(relative(r.f0t - r.gt * alpha_plain, reference) <= 1e-8);
      CHECK(plain.iterations > cg_info.iterations);
    }
  }
}

}  // namespace

TEST_CASE("Solvers: CG Cholesky and Chebyshev agree with the dense eigendecomposition (analytic NTK)") {
  const Regression r = analytic_regression(ntk_test::scaled(1200, 200), 50);
  const double mean_diagonal = r.g.trace() / static_cast<double>(r.g.rows());
  check_against_eigen(r, 1e-3 * mean_diagonal);
  check_against_eigen(r, 0);
}

// Long times: η t λ_max up to 4000, where g_t is steep near λ = ridge and needs a degree of a few
// hundred.  (The expansion once stopped at degree 63 with an error estimate of 0 and predictions
// 19 % off: a tail that stopped shrinking while N was still too small was taken for rounding.)
TEST_CASE("Solvers: Chebyshev at long times agrees with the eigendecomposition") {
  const Regression r = analytic_regression(ntk_test::scaled(600, 150), 40);
  const ntk::DenseGram<> dense(r.g);
  const double top = ntk::largest_eigenvalue(dense), ridge = 1e-4 * top;
  ntk::DynamicsOptions options;
  options.learning_rate = 1.0 / top;
  options.diag_reg = ridge;
  options.f0 = r.f0;
  const ntk::LinearizedDynamics<> eigen(r.g, r.y, options);
  const auto projection = eigen.project(r.gt, r.f0t);
  const std::vector<double> times{10, 1000, 4000};
  ntk::SolverInfo info;
  const auto factors = ntk::dynamics_factor(dense, Matrix(r.f0 - r.y), times, options.learning_rate,
                                            ntk::TimeModel::continuous, ridge, ntk::ChebyshevOptions{}, &info);
  CHECK(info.residual <= 1e-9);
  CHECK(info.iterations > 100);  // sqrt(4000 ln 1e10) ≈ 300: a degree below 100 cannot be right
  for (std::size_t i = 0; i < times.size(); ++i) {
    INFO("t " << times[i] << " degree " << info.iterations << " estimate " << info.residual);
    CHECK(relative(r.f0t - r.gt * factors[i], eigen.test_predictions(projection, times[i])) <= 1e-6);
  }
}

TEST_CASE("Solvers: CG Cholesky and Chebyshev agree with the dense eigendecomposition (empirical NTK)") {
  const Regression r = empirical_regression(ntk_test::scaled(400, 100), 30);
  const double mean_diagonal = r.g.trace() / static_cast<double>(r.g.rows());
  check_against_eigen(r, 1e-2 * mean_diagonal);
  check_against_eigen(r, 0);
}

TEST_CASE("Solvers: matrix-free CG and blocked test predictions match the dense path at t = inf") {
  const Index n = ntk_test::scaled(500, 80), m = 70;
  const Matrix x = normal_matrix(n, 12, 51), xt = normal_matrix(m, 12, 52), y = normal_matrix(n, 4, 53);
  const Matrix g = ntk::ntk_kernel(relu3, x), gt = ntk::ntk_kernel(relu3, xt, x);
  const double ridge = 1e-3 * g.trace() / static_cast<double>(n);
  const Matrix reference = gt * ntk::cholesky_solve(g, y, ridge);
  const ntk::MatrixFreeGram free(relu3, x, ntk::KernelKind::ntk, {}, 128);
  ntk::CgOptions cg;
  cg.tolerance = 1e-12;
  cg.preconditioner_rank = 60;
  cg.preconditioner_block = 20;
  const Matrix alpha = ntk::cg_solve(free, y, ridge, cg);
  // through the type-erased view: the same operations in the same order, so the same bits
  CHECK(ntk::cg_solve(ntk::GramRef<double>(free), y, ridge, cg) == alpha);
  const Matrix blocked = ntk::cross_kernel_times(relu3, xt, x, ntk::KernelKind::ntk, alpha, {}, 16);
  CHECK(relative(blocked, reference) <= 1e-8);
  std::vector<double> seen;
  const Matrix again = ntk::cross_kernel_times(relu3, xt, x, ntk::KernelKind::ntk, alpha, {}, 32,
                                               [&](double done, double) { seen.push_back(done); });
  CHECK(seen == std::vector<double>{32, 64, 70});
  CHECK(relative(again, blocked) <= 1e-13);  // other block shapes: rounding only
}

TEST_CASE("Solvers: RPCholesky recovers a low-rank Gram matrix exactly") {
  // Rank 7 in one round of 10 pivots; rank 36 in four rounds, each subtracting the factor so far
  // from its new columns (by 512-row blocks: n = 1,100 is two whole blocks and a tail), read from a
  // packed operator too.  A lost block or round leaves a residual far above 1e-10.
  for (const Index n : {Index(300), Index(1100)})
    for (const Index rank : {Index(7), Index(36)}) {
      INFO("n " << n << " rank " << rank);
      const Matrix f = normal_matrix(n, rank, 61);
      const Matrix ffT = f * f.transpose();
      const Matrix g = (ffT + ffT.transpose()) / 2;  // symmetric to the last bit, as a packed triangle is
      const Matrix factor = ntk::rp_cholesky(ntk::DenseGram<>(g), 50, 10, 3);
      CHECK(factor.cols() == rank);
      CHECK(relative(factor * factor.transpose(), g) <= 1e-10);
      ntk::PackedGram<> packed(n, ntk::PackedGramOptions{64, "", false, 2});
      packed.fill([&](Index c0, Index c1, Eigen::Ref<Matrix> out) { out = g.block(0, c0, c1, c1 - c0); });
      for (const int threads : {1, 2, 3}) {  // the same columns, so the same bits, for any thread count
        const Matrix again = ntk_test::with_threads(threads, [&] { return ntk::rp_cholesky(packed, 50, 10, 3); });
        INFO("threads " << threads);
        REQUIRE(again.cols() == factor.cols());
        CHECK(again == factor);
      }
    }
}

TEST_CASE("Solvers: the row-blocked product writes or adds alpha lhs rhs in every 512-row block") {
  // n around the block size and across a tail; r = 0 (an empty sum); dst filled with NaN first, so
  // a row the overwrite misses stays NaN; 1-3 threads give the same bits.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const Index n : {Index(1), Index(511), Index(512), Index(513), Index(1100)})
    for (const Index r : {Index(0), Index(3)}) {
      INFO("n " << n << " r " << r);
      const Matrix lhs = normal_matrix(n, r, 91), rhs = normal_matrix(r, 2, 92), start = normal_matrix(n, 2, 93);
      const Matrix product = lhs * rhs;
      Matrix first_set, first_add;
      for (const int threads : {1, 2, 3}) {
        Matrix set = Matrix::Constant(n, 2, nan), add = start;
        ntk_test::with_threads(threads, [&] {
          ntk::detail::row_blocked_product<double>(set, lhs, rhs, -0.5, false);
          ntk::detail::row_blocked_product<double>(add, lhs, rhs, 2.0, true);
        });
        REQUIRE(set.allFinite());
        CHECK((set + 0.5 * product).norm() <= 1e-14 * (1 + product.norm()));
        CHECK((add - start - 2.0 * product).norm() <= 1e-14 * (1 + product.norm() + start.norm()));
        if (threads == 1) {
          first_set = set;
          first_add = add;
        } else {
          CHECK(set == first_set);
          CHECK(add == first_add);
        }
      }
    }
}

TEST_CASE("Solvers: the Nystrom preconditioner applies (l_r + mu) U (L + mu I)^-1 U^T + I - U U^T") {
  // Frangella, Tropp & Udell's P^-1 for G ~ F F^T = U L U^T, here with U and L from the thin SVD of
  // F (the class goes through the eigendecomposition of F^T F instead).  n = 300 is one partial
  // 512-row block of the blocked apply, n = 1100 two whole blocks and a tail of 76: a skipped or
  // doubled block, a lost partial sum of U^T r or a wrong scale moves the result far above
  // rounding.  1, 2 and 3 threads give the same bits (fixed partial sums).
  const double mu = 0.5;
  for (const Index n : {Index(300), Index(1100)}) {
    const Index rank = 25;
    const Matrix f = normal_matrix(n, rank, 71), r = normal_matrix(n, 3, 72);
    Eigen::JacobiSVD<Matrix> svd(f, Eigen::ComputeThinU);
    const Matrix u = svd.matrixU();
    const Vector lambda = svd.singularValues().array().square();  // descending
    const double smallest = lambda[rank - 1];
    const Matrix expected =
        (smallest + mu) * u * ((lambda.array() + mu).inverse().matrix().asDiagonal() * (u.transpose() * r)) + r -
        u * (u.transpose() * r);
    const ntk::NystromPreconditioner<double> precond(f, mu);
    Matrix first;
    for (const int threads : {1, 2, 3}) {
      Matrix z;
      ntk_test::with_threads(threads, [&] { precond.apply(r, z); });
      CHECK(relative(z, expected) <= 1e-10);
      if (threads == 1)
        first = z;
      else
        CHECK(z == first);
    }
  }
}

TEST_CASE("Solvers: non-convergence and a zero ridge and bad times and singular Cholesky are reported") {
  const Regression r = analytic_regression(200, 5);
  const ntk::DenseGram<> dense(r.g);
  ntk::CgOptions few;
  few.max_iterations = 2;
  few.tolerance = 1e-14;
  few.preconditioner_rank = 0;
  bool thrown = false;
  try {
    ntk::cg_solve(dense, r.y, 1e-6, few);
  } catch (const ntk::NotConverged& e) {
    thrown = true;
    CHECK(e.info().iterations == 2);
    CHECK(e.info().residual > 1e-14);
    CHECK(std::string(e.what()).find("ntk::cg_solve: no convergence within 2 iterations") == 0);
  }
  CHECK(thrown);
  few.throw_on_failure = false;
  ntk::SolverInfo info;
  const Matrix partial = ntk::cg_solve(dense, r.y, 1e-6, few, &info);
  CHECK_FALSE(info.converged);
  CHECK(info.residual > 1e-14);
  CHECK(partial.allFinite());
  CHECK(throws_with<std::invalid_argument>([&] { ntk::cg_solve(dense, r.y, 0.0); },
                                           "ntk::cg_solve: ridge must be positive"));
  CHECK(throws_with<std::invalid_argument>([&] { ntk::cg_solve(dense, Matrix(r.y.topRows(10)), 1.0); },
                                           "ntk::cg_solve: y must have 200 rows"));
  CHECK(throws_with<std::invalid_argument>(
      [&] { ntk::dynamics_factor(dense, r.y, {inf}, 1.0, ntk::TimeModel::continuous); }, "t = inf is cg_solve"));
  ntk::ChebyshevOptions tight;
  tight.max_degree = 5;
  CHECK_THROWS_AS(ntk::dynamics_factor(dense, r.y, {1000.0}, 1.0, ntk::TimeModel::continuous, 0.0, tight),
                  ntk::NotConverged);
  CHECK(throws_with<std::invalid_argument>(
      [&] { ntk::dynamics_factor(dense, r.y, {3.0}, 10.0, ntk::TimeModel::discrete); }, "diverges"));
  // A singular Gram matrix: Cholesky refuses, the t = inf dynamics falls back to the pseudo-inverse.
  const Matrix f = normal_matrix(20, 3, 71);
  const Matrix singular = f * f.transpose();
  const Matrix y = normal_matrix(20, 1, 72);
  CHECK(throws_with<std::invalid_argument>([&] { ntk::cholesky_solve(singular, y); }, "not positive definite"));
  ntk::DynamicsOptions fast;
  fast.infinite_time_only = true;
  const ntk::LinearizedDynamics<> fallback(singular, y, fast), eigen(singular, y);
  CHECK_FALSE(fallback.uses_cholesky());
  CHECK(relative(fallback.train_predictions(inf), eigen.train_predictions(inf)) <= 1e-12);
  const ntk::LinearizedDynamics<> cholesky(r.g, r.y, fast);
  CHECK(cholesky.uses_cholesky());
  CHECK_THROWS_AS(cholesky.train_predictions(1.0), std::logic_error);
  CHECK_THROWS_AS(cholesky.eigenvalues(), std::logic_error);
}

TEST_CASE("Solvers: plan_solver picks the cheapest correct path and refuses a memory limit that cannot hold it") {
  const std::size_t gib = std::size_t(1) << 30;
  ntk::SolverRequest q;
  q.n = 4000;
  q.k = 10;
  q.test_points = 10000;
  q.memory_limit = 22 * gib;
  CHECK(ntk::plan_solver(q).method == ntk::SolverMethod::cholesky);
  q.finite_times = 3;
  CHECK(ntk::plan_solver(q).method == ntk::SolverMethod::eigen);
  q.finite_times = 0;
  q.n = 60000;
  q.ridge = 1e-3;
  const ntk::SolverPlan big = ntk::plan_solver(q);
  CHECK(big.method == ntk::SolverMethod::packed);
  CHECK(big.bytes > 14 * gib);
  CHECK(big.bytes < 22 * gib);
  q.memory_limit = 4 * gib;
  CHECK(ntk::plan_solver(q).method == ntk::SolverMethod::matrix_free);
  q.ridge = 0;  // no ridge: the iterative paths do not apply and the dense ones do not fit
  CHECK(throws_with<std::invalid_argument>([&] { ntk::plan_solver(q); },
                                           "ntk::plan_solver: no path fits the memory limit 4096 MiB"));
  q.ridge = 1e-3;
  q.method = ntk::SolverMethod::cholesky;
  CHECK(throws_with<std::invalid_argument>([&] { ntk::plan_solver(q); }, "cannot hold method cholesky for n = 60000"));
  q.memory_limit = 1u << 20;
  q.method = ntk::SolverMethod::automatic;
  CHECK_THROWS_AS(ntk::plan_solver(q), std::invalid_argument);
  q.memory_limit = 0;
  q.covariance = true;
  q.method = ntk::SolverMethod::packed;
  CHECK(throws_with<std::invalid_argument>([&] { ntk::plan_solver(q); }, "covariances need the eigendecomposition"));
  // P ranks share the n x n matrices: per rank 1/P of them, the n k vectors replicated.
  ntk::SolverRequest shared;
  shared.n = 40000;
  shared.k = 10;
  shared.test_points = 10000;
  const std::size_t dense_one = ntk::method_bytes(ntk::SolverMethod::cholesky, shared);
  shared.ranks = 4;
  const std::size_t dense_four = ntk::method_bytes(ntk::SolverMethod::cholesky, shared);
  const double n2 = 8.0 * 40000 * 40000;
  CHECK(std::abs((double(dense_one) - double(dense_four)) - 0.75 * n2) < 1e-6 * n2);
  shared.memory_limit = 4 * gib;  // 12.8 GB / 4 ranks fits, one rank does not
  shared.method = ntk::SolverMethod::cholesky;
  CHECK(ntk::plan_solver(shared).method == ntk::SolverMethod::cholesky);
  shared.ranks = 1;
  CHECK_THROWS_AS(ntk::plan_solver(shared), std::invalid_argument);
  shared.ranks = 0;
  CHECK(throws_with<std::invalid_argument>([&] { ntk::plan_solver(shared); }, "ranks"));
}
