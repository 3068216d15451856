// Reference outputs of the C++ library for the Python tests (bit-for-bit comparisons).
// Writes "name rows cols v v v ..." lines, every value as a C99 hex float (exact), column-major:
// inputs first (so Python feeds the very same numbers), then what each library function returns.
#include <ntk/activation_names.hpp>
#include <ntk/conv.hpp>
#include <ntk/deep_limit.hpp>
#include <ntk/dynamics.hpp>
#include <ntk/kernel.hpp>
#include <ntk/network.hpp>
#include <ntk/random.hpp>
#include <ntk/spec.hpp>

#include <cstdio>
#include <string>
#include <vector>

namespace {

template <class Derived>
void put(const std::string& name, const Eigen::MatrixBase<Derived>& m) {
  std::printf("%s %ld %ld", name.c_str(), static_cast<long>(m.rows()), static_cast<long>(m.cols()));
  for (Eigen::Index j = 0; j < m.cols(); ++j)
    for (Eigen::Index i = 0; i < m.rows(); ++i) std::printf(" %a", static_cast<double>(m(i, j)));
  std::printf("\n");
}

Eigen::MatrixXd normal(Eigen::Index n, Eigen::Index d, std::uint64_t seed, double scale = 1) {
  ntk::NormalGenerator g(seed);
  Eigen::MatrixXd x(n, d);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < d; ++j) x(i, j) = scale * g.normal();
  return x;
}

}  // namespace

int main() {
  const Eigen::MatrixXd x1 = normal(37, 5, 1), x2 = normal(21, 5, 2, 0.7);
  const Eigen::MatrixXf f1 = x1.cast<float>(), f2 = x2.cast<float>();
  put("x1", x1);
  put("x2", x2);
  // Analytic kernels: every named activation, double and float, symmetric and two-set.
  for (const char* name : {"relu", "leaky_relu:0.2", "abs", "erf", "tanh", "sigmoid", "gelu", "identity", "sin", "cos",
                           "softplus", "hermite:0.1,0.5,0.3", "opt:3"}) {
    ntk::with_activation(name, [&](const auto& phi) {
      auto net = ntk::mlp(phi, 3, 0, 1.3, 0.2);
      net.dense[1].sigma_w = 0.9;  // a per-layer sigma
      net.dense[3].sigma_b = 0.5;
      const auto both = ntk::kernel(net, x1, x2);
      put(std::string("kernel ") + name + " ntk", both.ntk);
      put(std::string("kernel ") + name + " nngp", both.nngp);
      put(std::string("kernel ") + name + " ntk_sym", ntk::ntk_kernel(net, x1));
      put(std::string("kernel ") + name + " f32", ntk::ntk_kernel(net, f1, f2));
      put(std::string("kernel ") + name + " f32_sym", ntk::nngp_kernel(net, f1));
    });
  }
  {
    const auto net = ntk::mlp(ntk::Relu{}, 2);
    const auto layers = ntk::kernel_layers(net, x1, x2);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      put("layers " + std::to_string(l) + " nngp", layers[l].nngp);
      put("layers " + std::to_string(l) + " nngp_dot", layers[l].nngp_dot);
      put("layers " + std::to_string(l) + " ntk", layers[l].ntk);
    }
  }
  // A finite network: seed 7, width 16, two outputs, tanh.
  const auto arch = ntk::mlp(ntk::Tanh{}, 2, 16, 1.2, 0.3, 2);
  ntk::Network<ntk::Mlp<ntk::Tanh>> net(arch, 5, 7);
  put("network parameters", net.parameters());
  put("network forward", net.forward(x1));
  put("network jacobian", net.jacobian(x2));
  put("network ntk", net.empirical_ntk(x1, x2));
  put("network ntk_full", net.empirical_ntk(x2, x2, ntk::NtkOutputs::full));
  const Eigen::MatrixXd y = normal(37, 2, 3);
  put("y", y);
  ntk::TrainOptions train;
  train.learning_rate = 0.01;
  train.steps = 5;
  const auto history = net.train(x1, y, train);
  put("network loss",
      Eigen::Map<const Eigen::VectorXd>(history.loss.data(), static_cast<Eigen::Index>(history.loss.size())));
  put("network trained", net.parameters());
  // Dynamics on the ReLU NTK.
  const auto relu = ntk::mlp(ntk::Relu{}, 3);
  const Eigen::MatrixXd g = ntk::ntk_kernel(relu, x1), k = ntk::ntk_kernel(relu, x2, x1);
  const Eigen::MatrixXd kg = ntk::nngp_kernel(relu, x1), kx = ntk::nngp_kernel(relu, x2, x1),
                        kxx = ntk::nngp_kernel(relu, x2);
  ntk::DynamicsOptions options;
  options.learning_rate = 0.5;
  options.diag_reg = 1e-3;
  const ntk::LinearizedDynamics<double> dynamics(g, y, options);
  const auto projection = dynamics.project(k);
  for (double t : {0.5, 3.0, std::numeric_limits<double>::infinity()}) {
    const std::string tag = std::isinf(t) ? "inf" : std::to_string(t);
    put("dynamics train " + tag, dynamics.train_predictions(t));
    put("dynamics test " + tag, dynamics.test_predictions(projection, t));
    put("dynamics ntk_gp " + tag, dynamics.ntk_gp_covariance(projection, kg, kx, kxx, t));
  }
  // Deep limit.
  for (const char* name : {"relu", "tanh", "erf", "opt:3"})
    ntk::with_activation(name, [&](const auto& phi) {
      const auto c = ntk::limit_constants(phi);
      Eigen::VectorXd v(8);
      v << c.E_phi, c.E_dphi, c.E_dphi2, c.E_phi2, c.A, c.A_prime, c.B, c.alpha;
      put(std::string("constants ") + name, v);
    });
  std::vector<int> labels;
  for (Eigen::Index i = 0; i < x1.rows(); ++i) labels.push_back(x1(i, 0) + x1(i, 1) > 0 ? 1 : -1);
  ntk::DeepKernelClassifier<ntk::Relu> classifier(ntk::Relu{}, 20);
  classifier.fit(x1, labels);
  const std::vector<int> predicted = classifier.predict(x2);
  Eigen::VectorXd p(static_cast<Eigen::Index>(predicted.size()));
  for (std::size_t i = 0; i < predicted.size(); ++i) p[static_cast<Eigen::Index>(i)] = predicted[i];
  put("deep predict", p);
  const auto gram = ntk::DeepKernel<ntk::Relu>(ntk::Relu{}, 50).gram(x1, x2);
  put("deep log_abs", gram.log_abs);
  // Image architectures from a SPEC string: kernels and a finite network's Jacobian.
  const Eigen::MatrixXd images = normal(5, 4 * 5 * 2, 3), others = normal(3, 4 * 5 * 2, 4);
  put("images", images);
  put("images2", others);
  const char* spec = "conv:3x3:3:sb=0.1,relu,conv:2x2:3:valid:param=standard,tanh,avgpool:2:same,gap,dense:2";
  const ntk::ImageArchitecture image_arch = ntk::parse_architecture(spec, ntk::parse_shape("4,5,2"));
  const auto image = ntk::image_kernel(image_arch, images, others);
  put("image ntk", image.ntk);
  put("image nngp", image.nngp);
  put("image ntk_sym", ntk::image_kernel(image_arch, images).ntk);
  const ntk::ImageNetwork image_net(image_arch, 7);
  put("image forward", image_net.forward(images));
  put("image jacobian", image_net.jacobian(others));
  return 0;
}
