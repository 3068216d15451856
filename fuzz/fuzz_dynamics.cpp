// Closed-form dynamics of fuzzed kernels, targets, rates and times: finite predictions or a
// documented exception.
#include <ntk/dynamics.hpp>

#include <cstdlib>
#include <limits>
#include <stdexcept>

#include "fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ntk_fuzz::Input in(data, size);
  const int n = in.integer(0, 5), r = in.integer(0, 5), k = in.integer(1, 2), m = in.integer(0, 3);
  Eigen::MatrixXd a(n, r), y(n, k), kt(m, n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < r; ++j) a(i, j) = in.value();
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < k; ++j) y(i, j) = in.value();
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) kt(i, j) = in.value();
  Eigen::MatrixXd g = a * a.transpose();
  if (in.byte() % 5 == 0 && n > 1) g(0, 1) += in.value();  // sometimes not symmetric
  ntk::DynamicsOptions options;
  options.learning_rate = in.value();
  options.time = in.byte() % 2 ? ntk::TimeModel::discrete : ntk::TimeModel::continuous;
  options.diag_reg = in.byte() % 3 == 0 ? in.value() : 0.0;
  const double t = in.byte() % 4 == 0 ? std::numeric_limits<double>::infinity() : in.integer(0, 200) * 0.5;
  try {
    const ntk::LinearizedDynamics<> dyn(g, y, options);
    const Eigen::MatrixXd f = dyn.train_predictions(t);
    const Eigen::MatrixXd p = dyn.test_predictions(kt, t);
    // Results are finite; out-of-range ones throw overflow_error.
    if (!f.allFinite() || !p.allFinite()) std::abort();
  } catch (const std::invalid_argument&) {
  } catch (const std::domain_error&) {
  } catch (const std::runtime_error&) {  // includes std::overflow_error
  }
  return 0;
}
