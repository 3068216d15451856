// Duals of fuzzed 2x2 covariances: finite values or a documented exception.
#include <ntk/dual.hpp>

#include <cmath>

#include "fuzz_input.hpp"

namespace {

template <class Phi>
void run(const Phi& phi, ntk_fuzz::Input& in) {
  const double s11 = in.value(), s12 = in.value(), s22 = in.value();
  ntk::DualOptions options;
  const bool quadrature = in.byte() % 4 == 0;  // a closed form checked by quadrature
  options.quadrature_order = in.integer(0, 3) == 0 ? in.integer(-2, 300) : 0;
  ntk_fuzz::expect_finite_or_documented([&] {
    const auto d = quadrature ? ntk::dual(ntk::Quadrature<Phi>{phi}, s11, s12, s22, options)
                              : ntk::dual(phi, s11, s12, s22, options);
    return std::isfinite(d.t) && std::isfinite(d.t_dot);
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ntk_fuzz::Input in(data, size);
  switch (in.integer(0, 6)) {
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
    case 4:
      run(ntk::Sin{}, in);
      break;
    case 5:
      run(ntk::Softplus{}, in);
      break;
    default:
      run(ntk::OptimalActivation(3), in);
      break;
  }
  return 0;
}
