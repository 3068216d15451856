// Analytic kernels with fuzzed shapes, values, activations, depths and scales: finite results or a
// documented exception (invalid_argument, domain_error, overflow_error).
#include <ntk/kernel.hpp>

#include "fuzz_input.hpp"

namespace {

template <class Phi>
void run(const Phi& phi, ntk_fuzz::Input& in) {
  const int n1 = in.integer(0, 4), n2 = in.integer(0, 4), d = in.integer(0, 4);
  const long depth = in.integer(0, 12);  // breadth over depth: deep runs are the tests' job
  const double sigma_w = in.value(), sigma_b = in.value();
  Eigen::MatrixXd x1(n1, d), x2(n2, d);
  for (int i = 0; i < n1; ++i)
    for (int j = 0; j < d; ++j) x1(i, j) = in.value();
  for (int i = 0; i < n2; ++i)
    for (int j = 0; j < d; ++j) x2(i, j) = in.value();
  ntk::KernelOptions options;
  options.dual.quadrature_order = in.integer(0, 3) == 0 ? in.integer(-1, 40) : 0;
  const bool symmetric = in.byte() % 2;
  ntk_fuzz::expect_finite_or_documented([&] {
    const auto net = ntk::mlp(phi, depth, 0, sigma_w, sigma_b);
    const auto k = symmetric ? ntk::kernel(net, x1) : ntk::kernel(net, x1, x2);
    return k.ntk.allFinite() && k.nngp.allFinite();
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ntk_fuzz::Input in(data, size);
  switch (in.integer(0, 4)) {
    case 0:
      run(ntk::Relu{}, in);
      break;
    case 1:
      run(ntk::Erf{}, in);
      break;
    case 2:
      run(ntk::Tanh{}, in);
      break;
    case 3:
      run(ntk::Gelu{}, in);
      break;
    default:
      run(ntk::Sin{}, in);
      break;
  }
  return 0;
}
