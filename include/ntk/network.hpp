#pragma once
/// \file network.hpp
/// Finite-width networks in the NTK parametrization (lecture eqs. 1–7, 18–23), built from the same
/// layer description as the analytic kernels (layers.hpp):
///   z = σ_w w h / sqrt(m_in) + σ_b β,  h' = φ(z),  θ = {w, β} ~ N(0, 1) i.i.d.
/// A Dense layer with Parametrization::standard holds θ = {W, b} instead: z = W h + b with
/// W = σ_w w / sqrt(m_in) and b = σ_b β drawn from the same normals (no bias term when σ_b = 0).
/// Data matrices hold one sample per row (n x d); outputs are n x k.
///
/// Parameter ordering of the flat vector θ: affine layers in order; within a layer the weights w
/// (m_out x m_in, row-major: w[a][b] at offset a * m_in + b) followed by the biases β (m_out).
/// Jacobian rows are ordered sample-major: row i * k + o holds ∂f_o(x_i)/∂θ.

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "activations.hpp"
#include "contracts.hpp"
#include "detail/memory.hpp"
#include "errors.hpp"
#include "layers.hpp"
#include "random.hpp"

namespace ntk {

/// Which empirical NTK: the full (n1 k) x (n2 k) kernel, or its average over the k outputs
/// (n1 x n2: (1/k) Σ_o ∇θ f_o(x)ᵀ ∇θ f_o(x'), which converges to the analytic Θ^L).
enum class NtkOutputs { full, averaged };

/// Full-batch gradient descent on the lecture's loss ½ Σ_i ‖f(x_i) − y_i‖².
struct TrainOptions {
  double learning_rate = 1e-3;  ///< step η
  long steps = 100;             ///< number of gradient steps T
  bool record_ntk = false;      ///< record the averaged empirical NTK on the training inputs
  void check(const char* function) const {
    detail::check_positive(function, "learning_rate", learning_rate);
    detail::check_at_least(function, "steps", steps, 0L);
  }
};

/// What training recorded: loss[t] is the loss after t steps (steps + 1 values); the NTK before and
/// after training when requested.
template <class Scalar>
struct TrainHistory {
  std::vector<Scalar> loss;
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> ntk_before, ntk_after;
};

/// A finite network with parameters, for an architecture Arch (Serial<...> or Mlp<Phi>).
/// Every Dense layer must have width >= 1 (the readout's width is the number of outputs k).
template <class Arch, class Scalar = double>
class Network {
  static_assert(detail::check_architecture_contract<Arch, Scalar, true>(),
                "ntk::Network: the architecture does not meet the contract (see the message above)");

 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using RowMajor = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// Draws θ ~ N(0, 1) from `seed` (NormalGenerator, in the documented ordering).
  /// Throws std::invalid_argument for input_dimension < 1, a Dense width < 1 or bad σ's.
  Network(Arch arch, Eigen::Index input_dimension, std::uint64_t seed)
      : m_arch(std::move(arch)), m_input(input_dimension) {
    detail::check_at_least<Eigen::Index>("Network", "input_dimension", input_dimension, 1);
    detail::check_architecture("Network", m_arch);
    Eigen::Index width = input_dimension, offset = 0;
    m_arch.for_each_layer([&](std::size_t, const auto& layer) {
      Info info;
      info.in = width;
      if constexpr (std::is_same_v<std::decay_t<decltype(layer)>, Dense>) {
        detail::check_at_least<Eigen::Index>("Network", "Dense width", layer.width, 1);
        info.dense = true;
        info.out = layer.width;
        info.offset = offset;
        // NTK parametrization: θ ~ N(0, 1) scaled in the forward pass.  Standard: θ is (W, b) itself,
        // drawn with those scales, and enters unscaled (a bias only when σ_b > 0; layers.hpp).
        const double weight_scale = layer.sigma_w / std::sqrt(static_cast<double>(width));
        if (layer.parametrization == Parametrization::standard) {
          info.weight_scale = 1;
          info.bias_scale = Scalar(layer.sigma_b > 0 ? 1 : 0);
          info.weight_init = weight_scale;
          info.bias_init = layer.sigma_b;
        } else {
          info.weight_scale = static_cast<Scalar>(weight_scale);
          info.bias_scale = static_cast<Scalar>(layer.sigma_b);
        }
        // Refuse a parameter vector that cannot be allocated before the products can overflow.
        const std::size_t layer_count =
            detail::saturating_product(static_cast<std::size_t>(layer.width), static_cast<std::size_t>(width) + 1);
        detail::check_allocation(
            "Network", "the parameters",
            static_cast<std::size_t>(offset) > std::numeric_limits<std::size_t>::max() - layer_count
                ? std::numeric_limits<std::size_t>::max()
                : static_cast<std::size_t>(offset) + layer_count,
            sizeof(Scalar));
        offset += layer.width * width + layer.width;
      } else {
        info.out = width;
      }
      width = info.out;
      m_info.push_back(info);
    });
    m_output = width;
    m_theta.resize(offset);
    NormalGenerator generator(seed);
    for (Eigen::Index p = 0; p < offset; ++p) m_theta[p] = static_cast<Scalar>(generator.normal());
    for (const Info& info : m_info)
      if (info.dense && (info.weight_init != 1 || info.bias_init != 1)) {
        const Eigen::Index weights = info.out * info.in;
        m_theta.segment(info.offset, weights) *= static_cast<Scalar>(info.weight_init);
        m_theta.segment(info.offset + weights, info.out) *= static_cast<Scalar>(info.bias_init);
      }
  }

  Eigen::Index input_dimension() const { return m_input; }
  Eigen::Index output_dimension() const { return m_output; }
  Eigen::Index parameter_count() const { return m_theta.size(); }
  const Arch& architecture() const { return m_arch; }

  /// The flat parameter vector θ (ordering in the file comment).
  const Vector& parameters() const { return m_theta; }
  /// Replaces θ.  Throws std::invalid_argument for a wrong length, std::domain_error for non-finite
  /// values; θ is unchanged then.
  void set_parameters(const Eigen::Ref<const Vector>& theta) {
    if (theta.size() != m_theta.size())
      detail::fail<std::invalid_argument>("Network::set_parameters", "theta must have ", m_theta.size(),
                                          " entries (got ", theta.size(), ")");
    detail::check_finite("Network::set_parameters", "theta", theta);
    m_theta = theta;
  }

  /// f(X): n x k outputs for the rows of X (n x d).  O(n p).
  template <class D>
  Matrix forward(const Eigen::MatrixBase<D>& x) const {
    check_input("Network::forward", x);
    std::vector<Matrix> inputs;
    Matrix out = run_forward(x, inputs);
    detail::check_result_finite("Network::forward", "the output", out);
    return out;
  }

  /// ∇θ f as an (n k) x p matrix (rows sample-major), by backpropagation.  O(n k p).
  template <class D>
  Matrix jacobian(const Eigen::MatrixBase<D>& x) const {
    check_input("Network::jacobian", x);
    std::vector<Matrix> inputs;
    run_forward(x, inputs);
    const Eigen::Index n = x.rows(), k = m_output;
    detail::check_allocation("Network::jacobian", "the (n k) x p Jacobian",
                             detail::saturating_product(static_cast<std::size_t>(n) * static_cast<std::size_t>(k),
                                                        2 * static_cast<std::size_t>(m_theta.size())),
                             sizeof(Scalar));
    RowMajor jac = RowMajor::Zero(n * k, m_theta.size());  // filled row by row
    std::vector<Matrix> deltas;
    for (Eigen::Index o = 0; o < k; ++o) {
      Matrix seed = Matrix::Zero(n, k);
      seed.col(o).setOnes();
      run_backward(seed, inputs, deltas);
      for (std::size_t l = 0; l < m_info.size(); ++l) {
        const Info& info = m_info[l];
        if (!info.dense) continue;
        for (Eigen::Index i = 0; i < n; ++i) {
          for (Eigen::Index a = 0; a < info.out; ++a) {
            const Scalar d = deltas[l](i, a);
            const Eigen::Index base = info.offset + a * info.in;
            for (Eigen::Index b = 0; b < info.in; ++b)
              jac(i * k + o, base + b) = info.weight_scale * d * inputs[l](i, b);
            jac(i * k + o, info.offset + info.out * info.in + a) = info.bias_scale * d;
          }
        }
      }
    }
    detail::check_result_finite("Network::jacobian", "the Jacobian", jac);
    return Matrix(jac);
  }

  /// Empirical NTK κ(x, x') = ∇θf(x)ᵀ∇θf(x') (lecture eq. 7) between the rows of x1 and x2,
  /// computed structured, without the Jacobian:
  ///   κ_{oo'}(x, x') = Σ_l ⟨δ_l^o(x), δ_l^{o'}(x')⟩ (σ_w²/m_in ⟨h_{l-1}(x), h_{l-1}(x')⟩ + σ_b²),
  /// δ_l = ∂f/∂z_l.  Cost O(n1 n2 Σ m_l + (n1 + n2) k p); memory O(n1 n2 + n k Σ m_l).
  template <class D1, class D2>
  Matrix empirical_ntk(const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
                       NtkOutputs outputs = NtkOutputs::averaged) const {
    check_input("Network::empirical_ntk", x1);
    check_input("Network::empirical_ntk", x2);
    const Eigen::Index n1 = x1.rows(), n2 = x2.rows(), k = m_output;
    detail::check_allocation(
        "Network::empirical_ntk", "the kernel",
        detail::saturating_product(static_cast<std::size_t>(n1) * static_cast<std::size_t>(n2),
                                   outputs == NtkOutputs::full ? static_cast<std::size_t>(k * k) : 1),
        sizeof(Scalar));
    std::vector<Matrix> in1, in2;
    run_forward(x1, in1);
    run_forward(x2, in2);
    std::vector<std::vector<Matrix>> d1(static_cast<std::size_t>(k)), d2(static_cast<std::size_t>(k));
    for (Eigen::Index o = 0; o < k; ++o) {
      Matrix seed1 = Matrix::Zero(n1, k), seed2 = Matrix::Zero(n2, k);
      seed1.col(o).setOnes();
      seed2.col(o).setOnes();
      run_backward(seed1, in1, d1[static_cast<std::size_t>(o)]);
      run_backward(seed2, in2, d2[static_cast<std::size_t>(o)]);
    }
    Matrix result = outputs == NtkOutputs::full ? Matrix::Zero(n1 * k, n2 * k) : Matrix::Zero(n1, n2);
    Matrix inner, block;
    for (std::size_t l = 0; l < m_info.size(); ++l) {
      const Info& info = m_info[l];
      if (!info.dense) continue;
      inner.noalias() = in1[l] * in2[l].transpose();
      inner = (inner.array() * (info.weight_scale * info.weight_scale) + info.bias_scale * info.bias_scale).matrix();
      for (Eigen::Index o = 0; o < k; ++o)
        for (Eigen::Index q = 0; q < k; ++q) {
          if (outputs == NtkOutputs::averaged && q != o) continue;
          block.noalias() = d1[static_cast<std::size_t>(o)][l] * d2[static_cast<std::size_t>(q)][l].transpose();
          if (outputs == NtkOutputs::averaged) {
            result.array() += block.array() * inner.array() / static_cast<Scalar>(k);
          } else {
            for (Eigen::Index i = 0; i < n1; ++i)
              for (Eigen::Index j = 0; j < n2; ++j) result(i * k + o, j * k + q) += block(i, j) * inner(i, j);
          }
        }
    }
    detail::check_result_finite("Network::empirical_ntk", "the kernel", result);
    return result;
  }

  /// The same kernel through the explicit Jacobians: J(x1) J(x2)ᵀ.  O(n1 n2 k² p) time and
  /// O(n k p) memory; kept as a reference and for small problems.
  template <class D1, class D2>
  Matrix empirical_ntk_via_jacobian(const Eigen::MatrixBase<D1>& x1, const Eigen::MatrixBase<D2>& x2,
                                    NtkOutputs outputs = NtkOutputs::averaged) const {
    const Matrix j1 = jacobian(x1), j2 = jacobian(x2);
    const Matrix full = j1 * j2.transpose();
    if (outputs == NtkOutputs::full) return full;
    const Eigen::Index k = m_output;
    Matrix averaged = Matrix::Zero(x1.rows(), x2.rows());
    for (Eigen::Index o = 0; o < k; ++o)
      averaged += Eigen::Map<const Matrix, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>(
          full.data() + o + o * full.rows(), x1.rows(), x2.rows(),
          Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(full.rows() * k, k));
    return averaged / static_cast<Scalar>(k);
  }

  /// The loss ½ Σ_i ‖f(x_i) − y_i‖² (lecture, summed over samples and outputs).
  template <class D1, class D2>
  Scalar loss(const Eigen::MatrixBase<D1>& x, const Eigen::MatrixBase<D2>& y) const {
    check_targets("Network::loss", x, y);
    std::vector<Matrix> inputs;
    const Scalar value = (run_forward(x, inputs) - y).squaredNorm() / 2;
    if (!std::isfinite(value))
      detail::fail<std::overflow_error>("Network::loss", "the loss is too large for the scalar type (got ", value, ")");
    return value;
  }

  /// ∇θ of the loss: J(X)ᵀ (f(X) − Y), by one batched backward pass.  O(n p).
  template <class D1, class D2>
  Vector gradient(const Eigen::MatrixBase<D1>& x, const Eigen::MatrixBase<D2>& y) const {
    check_targets("Network::gradient", x, y);
    std::vector<Matrix> inputs, deltas;
    const Matrix residual = run_forward(x, inputs) - y;
    Vector g = gradient_from(residual, inputs, deltas);
    detail::check_result_finite("Network::gradient", "the gradient", g);
    return g;
  }

  /// T steps of full-batch gradient descent θ ← θ − η ∇θ L on (x, y), in place.
  /// Throws std::invalid_argument / std::domain_error for bad shapes, data or options, and
  /// ntk::TrainingDiverged (carrying the step) when the loss or θ stops being finite; θ is then
  /// restored to its value before the call.
  template <class D1, class D2>
  TrainHistory<Scalar> train(const Eigen::MatrixBase<D1>& x, const Eigen::MatrixBase<D2>& y,
                             const TrainOptions& options) {
    options.check("Network::train");
    check_targets("Network::train", x, y);
    TrainHistory<Scalar> history;
    if (options.record_ntk) history.ntk_before = empirical_ntk(x, x);
    std::vector<Matrix> inputs, deltas;
    const Scalar eta = static_cast<Scalar>(options.learning_rate);
    const Vector saved = m_theta;  // strong guarantee: restored if training diverges
    for (long step = 0; step <= options.steps; ++step) {
      const Matrix residual = run_forward(x, inputs) - y;
      const Scalar loss_value = residual.squaredNorm() / 2;
      if (!std::isfinite(loss_value)) {
        m_theta = saved;
        diverged("Network::train", step, options.learning_rate, loss_value);
      }
      history.loss.push_back(loss_value);
      if (step == options.steps) break;
      // All deltas first (they need the current weights), then each layer's rank-n update in place:
      // no p-sized gradient buffer, which matters for wide layers.
      run_backward(residual, inputs, deltas);
      for (std::size_t l = 0; l < m_info.size(); ++l) {
        const Info& info = m_info[l];
        if (!info.dense) continue;
        Eigen::Map<RowMajor> w(m_theta.data() + info.offset, info.out, info.in);
        w.noalias() -= (eta * info.weight_scale) * (deltas[l].transpose() * inputs[l]);
        Eigen::Map<Vector>(m_theta.data() + info.offset + info.out * info.in, info.out) -=
            (eta * info.bias_scale) * deltas[l].colwise().sum().transpose();
      }
    }
    if (!m_theta.allFinite()) {
      m_theta = saved;
      diverged("Network::train", options.steps, options.learning_rate, history.loss.back());
    }
    if (options.record_ntk) history.ntk_after = empirical_ntk(x, x);
    return history;
  }

 private:
  [[noreturn]] static void diverged(const char* function, long step, double learning_rate, Scalar loss) {
    std::ostringstream out;
    out.precision(17);
    out << "ntk::" << function << ": training diverged at step " << step << " (got loss " << loss
        << " at learning_rate " << learning_rate << "; parameters restored, lower the learning rate)";
    throw TrainingDiverged(out.str(), step);
  }

  struct Info {
    bool dense = false;
    Eigen::Index in = 0, out = 0, offset = 0;
    Scalar weight_scale = 0, bias_scale = 0;  // multipliers of w and β in the forward pass
    double weight_init = 1, bias_init = 1;    // standard parametrization: the draws' scales
  };

  template <class D>
  void check_input(const char* function, const Eigen::MatrixBase<D>& x) const {
    static_assert(std::is_same_v<typename D::Scalar, Scalar>, "ntk::Network: scalar type mismatch");
    detail::check_nonempty(function, "x", x);
    detail::check_cols(function, "x", x, m_input);
    detail::check_finite(function, "x", x);
  }
  template <class D1, class D2>
  void check_targets(const char* function, const Eigen::MatrixBase<D1>& x, const Eigen::MatrixBase<D2>& y) const {
    check_input(function, x);
    detail::check_rows(function, "y", y, x.rows());
    detail::check_cols(function, "y", y, m_output);
    detail::check_finite(function, "y", y);
  }

  Eigen::Map<const RowMajor> weights(const Info& info) const {
    return Eigen::Map<const RowMajor>(m_theta.data() + info.offset, info.out, info.in);
  }
  Eigen::Map<const Vector> biases(const Info& info) const {
    return Eigen::Map<const Vector>(m_theta.data() + info.offset + info.out * info.in, info.out);
  }

  /// Forward pass keeping each layer's input (inputs[l], n x in_l); returns the output.
  template <class D>
  Matrix run_forward(const Eigen::MatrixBase<D>& x, std::vector<Matrix>& inputs) const {
    inputs.resize(m_info.size());
    Matrix h = x;
    m_arch.for_each_layer([&](std::size_t l, const auto& layer) {
      inputs[l] = h;
      const Info& info = m_info[l];
      if constexpr (std::is_same_v<std::decay_t<decltype(layer)>, Dense>) {
        Matrix z(h.rows(), info.out);
        z.noalias() = info.weight_scale * (h * weights(info).transpose());
        z.rowwise() += (info.bias_scale * biases(info)).transpose();
        h = std::move(z);
      } else {
        const auto& phi = layer.phi;
        h = detail::activation_values(phi, h);  // one call for batch activations (batch_values.hpp)
      }
    });
    return h;
  }

  /// Backward pass from ∂/∂f = seed (n x k): deltas[l] = ∂/∂(output of Dense layer l) (n x out_l).
  void run_backward(const Matrix& seed, const std::vector<Matrix>& inputs, std::vector<Matrix>& deltas) const {
    deltas.resize(m_info.size());
    Matrix delta = seed;
    m_arch.for_each_layer_reverse([&](std::size_t l, const auto& layer) {
      const Info& info = m_info[l];
      if constexpr (std::is_same_v<std::decay_t<decltype(layer)>, Dense>) {
        deltas[l] = delta;
        if (l > 0) {
          Matrix back(delta.rows(), info.in);
          back.noalias() = info.weight_scale * (delta * weights(info));
          delta = std::move(back);
        }
      } else {
        const auto& phi = layer.phi;
        delta.array() *= detail::activation_derivatives(phi, inputs[l]).array();
      }
    });
  }

  Vector gradient_from(const Matrix& residual, const std::vector<Matrix>& inputs, std::vector<Matrix>& deltas) const {
    run_backward(residual, inputs, deltas);
    Vector grad(m_theta.size());
    for (std::size_t l = 0; l < m_info.size(); ++l) {
      const Info& info = m_info[l];
      if (!info.dense) continue;
      Eigen::Map<RowMajor> gw(grad.data() + info.offset, info.out, info.in);
      gw.noalias() = info.weight_scale * (deltas[l].transpose() * inputs[l]);
      Eigen::Map<Vector>(grad.data() + info.offset + info.out * info.in, info.out) =
          info.bias_scale * deltas[l].colwise().sum().transpose();
    }
    return grad;
  }

  Arch m_arch;
  Eigen::Index m_input = 0, m_output = 0;
  std::vector<Info> m_info;
  Vector m_theta;
};

/// The linearized network f_lin(x) = f0(x) + ∇θf0(x)ᵀ(θ − θ0) (lecture eq. 18) around a network's
/// current parameters θ0.  Trained by the same gradient descent as the network.
template <class Arch, class Scalar = double>
class LinearizedNetwork {
 public:
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  explicit LinearizedNetwork(const Network<Arch, Scalar>& base)
      : m_base(base), m_shift(Vector::Zero(base.parameter_count())) {}

  /// θ − θ0.
  const Vector& parameter_shift() const { return m_shift; }

  /// f_lin(X), n x k.
  template <class D>
  Matrix forward(const Eigen::MatrixBase<D>& x) const {
    Matrix out = m_base.forward(x);
    const Vector change = m_base.jacobian(x) * m_shift;
    for (Eigen::Index i = 0; i < out.rows(); ++i)
      for (Eigen::Index o = 0; o < out.cols(); ++o) out(i, o) += change[i * out.cols() + o];
    return out;
  }

  /// T steps of gradient descent on ½ Σ ‖f_lin(x_i) − y_i‖²: θ ← θ − η J0ᵀ (f_lin(X) − Y).
  template <class D1, class D2>
  TrainHistory<Scalar> train(const Eigen::MatrixBase<D1>& x, const Eigen::MatrixBase<D2>& y,
                             const TrainOptions& options) {
    options.check("LinearizedNetwork::train");
    detail::check_rows("LinearizedNetwork::train", "y", y, x.rows());
    detail::check_cols("LinearizedNetwork::train", "y", y, m_base.output_dimension());
    detail::check_finite("LinearizedNetwork::train", "y", y);
    const Matrix j0 = m_base.jacobian(x);
    const Matrix f0 = m_base.forward(x);
    const Eigen::Index k = f0.cols();
    Vector target(x.rows() * k), start(x.rows() * k);
    for (Eigen::Index i = 0; i < x.rows(); ++i)
      for (Eigen::Index o = 0; o < k; ++o) {
        target[i * k + o] = y(i, o);
        start[i * k + o] = f0(i, o);
      }
    TrainHistory<Scalar> history;
    const Scalar eta = static_cast<Scalar>(options.learning_rate);
    const Vector saved = m_shift;  // strong guarantee: restored if training diverges
    for (long step = 0; step <= options.steps; ++step) {
      const Vector residual = start + j0 * m_shift - target;
      const Scalar loss_value = residual.squaredNorm() / 2;
      if (!std::isfinite(loss_value) || !m_shift.allFinite()) {
        m_shift = saved;
        std::ostringstream out;
        out.precision(17);
        out << "ntk::LinearizedNetwork::train: training diverged at step " << step << " (got loss " << loss_value
            << " at learning_rate " << options.learning_rate << "; parameters restored, lower the learning rate)";
        throw TrainingDiverged(out.str(), step);
      }
      history.loss.push_back(loss_value);
      if (step == options.steps) break;
      m_shift.noalias() -= eta * (j0.transpose() * residual);
    }
    return history;
  }

 private:
  Network<Arch, Scalar> m_base;
  Vector m_shift;
};

/// A Monte Carlo estimate: the mean over draws and its standard error, entrywise.
template <class Scalar>
struct MonteCarloEstimate {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> mean, standard_error;
};

namespace detail {

template <class Scalar, class Draw>
MonteCarloEstimate<Scalar> monte_carlo(const char* function, long draws, Eigen::Index n1, Eigen::Index n2,
                                       Draw&& draw) {
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  detail::check_at_least(function, "draws", draws, 2L);
  // Every draw's n1 x n2 sample is kept (so the sums are in a fixed order): refuse before allocating.
  check_allocation(function, "draws x n1 x n2 samples",
                   saturating_product(static_cast<std::size_t>(draws),
                                      saturating_product(static_cast<std::size_t>(n1), static_cast<std::size_t>(n2))),
                   sizeof(Scalar));
  std::vector<Matrix> samples(static_cast<std::size_t>(draws));
  samples[0] = draw(0);      // outside the parallel region, so bad input throws to the caller
  std::exception_ptr error;  // an exception may not leave the parallel region
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic)
#endif
  for (long m = 1; m < draws; ++m) {
    try {
      samples[static_cast<std::size_t>(m)] = draw(m);
    } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(ntk_monte_carlo_error)
#endif
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  Matrix sum = Matrix::Zero(samples[0].rows(), samples[0].cols()), squares = sum;
  for (const auto& s : samples) {  // fixed order: identical on any thread count
    sum += s;
    squares.array() += s.array().square();
  }
  const Scalar count = static_cast<Scalar>(draws);
  MonteCarloEstimate<Scalar> estimate;
  estimate.mean = sum / count;
  const Matrix variance =
      ((squares.array() / count - estimate.mean.array().square()).max(Scalar(0)) * count / (count - 1)).matrix();
  estimate.standard_error = (variance.array() / count).sqrt().matrix();
  detail::check_result_finite(function, "the estimate", estimate.mean);
  detail::check_result_finite(function, "the standard error", estimate.standard_error);
  return estimate;
}

}  // namespace detail

/// Monte Carlo NNGP over `draws` random networks: the mean of f0(x) f0(x')ᵀ averaged over the k
/// outputs (f0 ~ GP(0, Σ^L), lecture eq. 17), n1 x n2, with its standard error.  Draw m uses seed
/// NormalGenerator::derive(seed, m); the result does not depend on the thread count.
template <class Arch, class D1, class D2>
MonteCarloEstimate<typename D1::Scalar> monte_carlo_nngp(const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                                         const Eigen::MatrixBase<D2>& x2, long draws,
                                                         std::uint64_t seed) {
  using Scalar = typename D1::Scalar;
  const typename Network<Arch, Scalar>::Matrix a = x1, b = x2;
  return detail::monte_carlo<Scalar>("monte_carlo_nngp", draws, a.rows(), b.rows(), [&](long m) {
    const Network<Arch, Scalar> net(arch, a.cols(), NormalGenerator::derive(seed, static_cast<std::uint64_t>(m)));
    return typename Network<Arch, Scalar>::Matrix(net.forward(a) * net.forward(b).transpose() /
                                                  static_cast<Scalar>(net.output_dimension()));
  });
}

/// Monte Carlo mean of the output-averaged empirical NTK over `draws` random networks.
template <class Arch, class D1, class D2>
MonteCarloEstimate<typename D1::Scalar> monte_carlo_ntk(const Arch& arch, const Eigen::MatrixBase<D1>& x1,
                                                        const Eigen::MatrixBase<D2>& x2, long draws,
                                                        std::uint64_t seed) {
  using Scalar = typename D1::Scalar;
  const typename Network<Arch, Scalar>::Matrix a = x1, b = x2;
  return detail::monte_carlo<Scalar>("monte_carlo_ntk", draws, a.rows(), b.rows(), [&](long m) {
    const Network<Arch, Scalar> net(arch, a.cols(), NormalGenerator::derive(seed, static_cast<std::uint64_t>(m)));
    return net.empirical_ntk(a, b);
  });
}

}  // namespace ntk
