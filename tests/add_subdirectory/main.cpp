// A vendored ntk under strict warnings: instantiates the main entry points (analytic kernels with a
// closed-form and a tabulated activation, a finite network, the dynamics, the solvers) and checks one
// reference value: the ReLU dual at unit variances and correlation 1/2 is 0.3044988905221147.
#include <ntk/ntk.hpp>

#include <cmath>
#include <cstdio>

int main() {
  const Eigen::MatrixXd x = Eigen::MatrixXd::Random(12, 4), y = Eigen::MatrixXd::Random(12, 1);
  const auto relu = ntk::kernel(ntk::mlp(ntk::Relu{}, 3), x, ntk::KernelKind::both);
  const auto tanh = ntk::kernel(ntk::mlp(ntk::Tanh{}, 2), x, ntk::KernelKind::ntk);
  ntk::Network<ntk::Mlp<ntk::Erf>> net(ntk::mlp(ntk::Erf{}, 2, 32), 4, 1u);
  const Eigen::MatrixXd empirical = net.empirical_ntk(x, x);
  ntk::LinearizedDynamics<double> dynamics(relu.ntk, y);
  const Eigen::MatrixXd f = dynamics.train_predictions(10.0);
  const Eigen::MatrixXd alpha = ntk::cholesky_solve(relu.ntk, y, 1e-3);
  const Eigen::MatrixXd deep = ntk::DeepKernel<ntk::Relu>(ntk::Relu{}, 50).gram(x, x).ratio();
  const Eigen::MatrixXd images = Eigen::MatrixXd::Random(3, 4 * 4 * 2);
  const auto conv =
      ntk::image_kernel(ntk::parse_architecture("conv:3x3:4,relu,flatten,dense", ntk::parse_shape("4,4,2")), images,
                        ntk::KernelKind::ntk);
  const double finite =
      relu.nngp.sum() + tanh.ntk.sum() + empirical.sum() + f.sum() + alpha.sum() + deep.sum() + conv.ntk.sum();
  const auto d = ntk::dual(ntk::Relu{}, 1.0, 0.5, 1.0);
  std::printf("vendored ntk %s: relu dual %.16f, checksum %g\n", ntk::version_string, d.t, finite);
  return std::isfinite(finite) && std::fabs(d.t - 0.3044988905221147) < 1e-14 ? 0 : 1;
}
