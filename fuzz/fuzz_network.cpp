// Fuzzed finite networks: construction, forward, empirical NTK and training either give finite
// results or throw a documented exception; a diverging training run throws ntk::TrainingDiverged
// and leaves the parameters exactly as they were.
#include <ntk/network.hpp>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>

#include "fuzz_input.hpp"

namespace {

template <class Phi>
void run(const Phi& phi, ntk_fuzz::Input& in) {
  const long depth = in.integer(1, 3);
  // A fuzzed width may be any double: converted only inside Eigen::Index's range (a cast of inf,
  // NaN or 1e300 is undefined behaviour), else the most negative index (refused as a width).
  // Widths from 1,025 to 1e12 are valid and only cost memory (width 8.4e7 wants gigabytes, past
  // the fuzzer's RSS limit): they become 1,024; larger ones stay, to be refused before allocating.
  const auto to_index = [](double v) {
    if (v > 1024 && v < 1e12) return Eigen::Index{1024};
    return std::isfinite(v) && std::fabs(v) < 9.0e18 ? static_cast<Eigen::Index>(v)
                                                     : std::numeric_limits<Eigen::Index>::min();
  };
  const Eigen::Index width = in.integer(0, 7) == 0 ? to_index(in.value()) : in.integer(1, 8);
  const double sigma_w = in.value(), sigma_b = in.value();
  const Eigen::Index n = in.integer(1, 3), d = in.integer(1, 3);
  Eigen::MatrixXd x(n, d), y(n, 1);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = in.value();
  for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] = in.value();
  ntk::TrainOptions options;
  options.learning_rate = in.value();
  options.steps = in.integer(0, 20);
  ntk_fuzz::expect_finite_or_documented([&] {
    ntk::Network<ntk::Mlp<Phi>> net(ntk::mlp(phi, depth, width, sigma_w, sigma_b), d, in.byte());
    bool ok = net.forward(x).allFinite() && net.empirical_ntk(x, x).allFinite();
    const Eigen::VectorXd before = net.parameters();
    try {
      const auto history = net.train(x, y, options);
      for (double l : history.loss) ok = ok && std::isfinite(l);
      ok = ok && net.parameters().allFinite();
    } catch (const ntk::TrainingDiverged& e) {
      ok = ok && e.step() >= 0 && e.step() <= options.steps && net.parameters() == before;
    }
    return ok;
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ntk_fuzz::Input in(data, size);
  try {
    switch (in.integer(0, 4)) {
      case 0:
        run(ntk::Relu{}, in);
        break;
      case 1:
        run(ntk::Tanh{}, in);
        break;
      case 2:
        run(ntk::Erf{in.value()}, in);
        break;
      case 3:
        run(ntk::LeakyRelu{in.value()}, in);
        break;
      default:
        run(ntk::Sin{}, in);
        break;
    }
  } catch (const std::invalid_argument&) {  // an activation parameter refused where it is built
  }
  return 0;
}
