// The README's example: the analytic NTK of a ReLU network and closed-form predictions of the
// trained infinitely wide network, in a few lines.
#include <ntk/ntk.hpp>

#include <cmath>
#include <iostream>

int main() {
  // Data: one sample per row.  Targets y = sin(3 x1) x2.
  ntk::NormalGenerator g(1);
  Eigen::MatrixXd x(40, 2), x_test(5, 2), y(40, 1);
  for (int i = 0; i < 40; ++i) {
    x.row(i) << g.normal(), g.normal();
    y(i) = std::sin(3 * x(i, 0)) * x(i, 1);
  }
  for (int i = 0; i < 5; ++i) x_test.row(i) << g.normal(), g.normal();

  // 3 hidden ReLU layers, sigma_w = 1.4, sigma_b = 0.1 (NTK parametrization).
  const auto net = ntk::mlp(ntk::Relu{}, 3, 0, 1.4, 0.1);
  const auto train = ntk::kernel(net, x);          // NNGP and NTK, 40 x 40
  const auto cross = ntk::kernel(net, x_test, x);  // 5 x 40

  // Gradient flow on the sum of squared errors, from one eigendecomposition.
  const ntk::LinearizedDynamics<> dynamics(train.ntk, y);
  const auto projection = dynamics.project(cross.ntk);
  for (double t : {1.0, 10.0, std::numeric_limits<double>::infinity()})
    std::cout << "t = " << t << ": f(x_test) = " << dynamics.test_predictions(projection, t).transpose()
              << "   train loss " << dynamics.train_loss({t})[0] << "\n";
  std::cout << "NTK-GP variance at t = inf: "
            << dynamics
                   .ntk_gp_covariance(projection, train.nngp, cross.nngp, ntk::nngp_kernel(net, x_test),
                                      std::numeric_limits<double>::infinity())
                   .diagonal()
                   .transpose()
            << "\n";
  return 0;
}
