#include <ntk/gram.hpp>
#include <ntk/kernel.hpp>

#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch_shim.hpp"
#include "test_config.hpp"

namespace {

using Matrix = Eigen::MatrixXd;
using Vector = Eigen::VectorXd;
using Index = Eigen::Index;
using ntk_test::normal_matrix;

double relative(const Matrix& a, const Matrix& b) { return (a - b).norm() / std::max(b.norm(), 1e-300); }

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

}  // namespace

TEST_CASE("Gram operators: dense, packed, file-backed and matrix-free products agree with the dense matrix to rounding") {
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
  const Matrix nngp = ntk::nngp_kernel(relu3, x);
  Matrix out(n, 7);
  ntk::MatrixFreeGram(relu3, x, ntk::KernelKind::nngp, {}, 100).apply(v, out);
  CHECK(relative(out, nngp * v) < 1e-13);
}

TEST_CASE("Gram operators: bad construction is rejected naming the function") {
  const Matrix x = normal_matrix(10, 3, 1);
  ntk::PackedGramOptions bad;
  bad.block = 0;
  CHECK_THROWS_AS(ntk::PackedGram<>(10, bad), std::invalid_argument);
  CHECK_THROWS_AS(ntk::packed_gram(relu3, x, ntk::KernelKind::both), std::invalid_argument);
  ntk::PackedGramOptions nowhere;
  nowhere.file = "/nonexistent-dir/gram.bin";
  CHECK(throws_with<std::invalid_argument>([&] { ntk::PackedGram<>(10, nowhere); }, "ntk::PackedGram: cannot create file"));
  CHECK_THROWS_AS(ntk::MatrixFreeGram(relu3, x, ntk::KernelKind::both), std::invalid_argument);
  const Matrix rect(3, 4);
  CHECK_THROWS_AS(ntk::DenseGram<>(rect), std::invalid_argument);
}
