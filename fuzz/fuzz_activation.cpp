// Fuzzed activation parameters: construction, limit_constants, dual() and kernel() either give
// finite results or throw a documented exception (invalid_argument for a bad parameter,
// domain_error, overflow_error, length_error); never a crash, NaN or inf returned as a value.
#include <ntk/deep_limit.hpp>
#include <ntk/kernel.hpp>

#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "fuzz_input.hpp"

namespace {

template <class Phi>
void run(const Phi& phi, ntk_fuzz::Input& in) {
  ntk_fuzz::expect_finite_or_documented([&] {
    const ntk::LimitConstants c = ntk::limit_constants(phi);
    return std::isfinite(c.E_phi) && std::isfinite(c.E_dphi) && std::isfinite(c.E_phi2) && std::isfinite(c.E_dphi2) &&
           std::isfinite(c.A) && std::isfinite(c.A_prime) && std::isfinite(c.B);
  });
  const double q1 = std::fabs(in.value()), q2 = std::fabs(in.value()), rho = in.integer(-64, 64) / 64.0;
  ntk_fuzz::expect_finite_or_documented([&] {
    const auto d = ntk::dual(phi, q1, rho * std::sqrt(q1) * std::sqrt(q2), q2);
    return std::isfinite(d.t) && std::isfinite(d.t_dot);
  });
  Eigen::MatrixXd x(2, 2);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = in.value();
  const long depth = in.integer(1, 3);
  ntk_fuzz::expect_finite_or_documented([&] {
    const auto k = ntk::kernel(ntk::mlp(phi, depth), x);
    return k.nngp.allFinite() && k.ntk.allFinite();
  });
}

std::vector<double> coefficients(ntk_fuzz::Input& in) {
  std::vector<double> c(static_cast<std::size_t>(in.integer(0, 6)));
  for (double& v : c) v = in.value();
  return c;
}

/// Builds the activation (its constructor may refuse the parameters) and runs the checks.
template <class Make>
void build_and_run(Make&& make, ntk_fuzz::Input& in) {
  try {
    const auto phi = make();
    run(phi, in);
  } catch (const std::invalid_argument&) {
  } catch (const std::domain_error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ntk_fuzz::Input in(data, size);
  switch (in.integer(0, 13)) {
    case 0: {
      const double a = in.value();
      build_and_run([&] { return ntk::LeakyRelu{a}; }, in);
      break;
    }
    case 1: {
      const double b = in.value();
      build_and_run([&] { return ntk::Erf{b}; }, in);
      break;
    }
    case 2: {
      const auto c = coefficients(in);
      build_and_run([&] { return ntk::Hermite(c); }, in);
      break;
    }
    case 3: {
      const double d = in.value();
      build_and_run([&] { return ntk::OptimalActivation(d); }, in);
      break;
    }
    case 4: {
      const double a = in.value(), b = in.value();
      build_and_run([&] { return ntk::ABRelu(a, b); }, in);
      break;
    }
    case 5: {
      const double a = in.value(), b = in.value();
      build_and_run([&] { return ntk::Exp(a, b); }, in);
      break;
    }
    case 6: {
      const double a = in.value(), b = in.value();
      build_and_run([&] { return ntk::Gaussian(a, b); }, in);
      break;
    }
    case 7: {
      const double g = in.value();
      build_and_run([&] { return ntk::Rbf(g); }, in);
      break;
    }
    case 8: {
      const auto c = coefficients(in);
      build_and_run([&] { return ntk::Polynomial(c); }, in);
      break;
    }
    case 9: {
      const int n = in.integer(-2, 40);
      build_and_run([&] { return ntk::Monomial(n); }, in);
      break;
    }
    case 10: {
      const int n = in.integer(-2, 20);
      build_and_run([&] { return ntk::RectifiedMonomial(n); }, in);
      break;
    }
    case 11:
      build_and_run([] { return ntk::Tanh{}; }, in);
      break;
    case 12:
      build_and_run([] { return ntk::Sigmoid{}; }, in);
      break;
    default: {
      const double b = in.value();
      build_and_run([&] { return ntk::Quadrature<ntk::Erf>{ntk::Erf{b}}; }, in);
      break;
    }
  }
  return 0;
}
