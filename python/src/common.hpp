#pragma once
// Shared pieces of the ntk Python module: arrays in and out without copies, activations from
// Python (names or callables), architectures from keyword arguments.
#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <ntk/activation_names.hpp>
#include <ntk/activations.hpp>
#include <ntk/layers.hpp>

#include <Eigen/Core>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ntk_python {

namespace py = pybind11;

template <class S>
using Matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <class S>
using RowMap =
    Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0, Eigen::OuterStride<>>;
template <class S>
using ColMap = Eigen::Map<const Matrix<S>, 0, Eigen::OuterStride<>>;

/// Calls f(map) with a read-only Eigen view of a 2-D NumPy array of scalar S whose rows or columns
/// are contiguous (the Python layer guarantees it): a row-major view for C-like layouts, a
/// column-major one for Fortran-like layouts.  No copy.
template <class S, class F>
decltype(auto) with_matrix(const py::array& a, F&& f) {
  const auto rows = static_cast<Eigen::Index>(a.shape(0)), cols = static_cast<Eigen::Index>(a.shape(1));
  const auto item = static_cast<py::ssize_t>(sizeof(S));
  const S* data = static_cast<const S*>(a.data());
  const py::ssize_t s0 = a.strides(0), s1 = a.strides(1);
  if (s1 == item || cols <= 1)
    return f(RowMap<S>(data, rows, cols, Eigen::OuterStride<>(rows <= 1 ? cols : s0 / item)));
  return f(ColMap<S>(data, rows, cols, Eigen::OuterStride<>(cols <= 1 ? rows : s1 / item)));
}

/// The 2-D float64 array of an Eigen matrix, moved (no copy).
template <class S>
py::array to_numpy(Matrix<S>&& m) {
  return py::cast(std::move(m));
}

/// A Python activation: vectorized callables φ and φ' (φ' may be None: a numerical derivative).
/// Evaluated through values_and_derivatives in batches, with the GIL taken for each batch; the
/// library calls it only in its single-threaded setup (batch_only), never per kernel entry.
class PythonActivation {
 public:
  static constexpr bool batch_only = true;

  PythonActivation() = default;  // no callables: only a placeholder (ntk::Activation needs one)
  PythonActivation(py::object phi, py::object dphi);

  std::string name() const { return "python"; }
  template <class S>
  S value(S z) const {
    S v;
    values_and_derivatives(&z, &v, static_cast<S*>(nullptr), 1);
    return v;
  }
  template <class S>
  S derivative(S z) const {
    S d;
    values_and_derivatives(&z, static_cast<S*>(nullptr), &d, 1);
    return d;
  }
  /// v[i] = φ(z[i]) and dv[i] = φ'(z[i]) for i < n (either output may be null): one call of each
  /// callable.  Throws what the callable raises, ValueError for a result of the wrong shape or
  /// type, FloatingPointError for a non-finite value.
  void values_and_derivatives(const double* z, double* v, double* dv, std::size_t n) const;
  void values_and_derivatives(const float* z, float* v, float* dv, std::size_t n) const;

  /// The step of the numerical derivative at z (when no φ' was given).
  static double step(double z);

 private:
  struct Callables;
  std::shared_ptr<Callables> m_callables;
};

/// An activation argument: a name (str), a callable φ, or a pair (φ, φ').
struct ActivationSpec {
  std::string name;
  std::shared_ptr<PythonActivation> python;
};
ActivationSpec activation_spec(const py::object& activation);

/// Calls f(phi) for the activation.
template <class F>
decltype(auto) with_activation(const ActivationSpec& spec, F&& f) {
  if (spec.python) return f(*spec.python);
  return ntk::with_activation(spec.name, std::forward<F>(f));
}

/// As above; with `quadrature` a named activation with a closed-form dual reaches f as
/// ntk::Quadrature<Phi> (the kernels' quadrature= checking mode).
template <class F>
decltype(auto) with_activation(const ActivationSpec& spec, bool quadrature, F&& f) {
  if (spec.python) return f(*spec.python);
  return ntk::with_activation(spec.name, quadrature, std::forward<F>(f));
}

/// depth hidden layers and per-affine-layer σ_w, σ_b (one value for all, or depth + 1 values).
struct Architecture {
  long depth = 3;
  std::vector<double> sigma_w{1.0}, sigma_b{1.0};
};

/// The MLP of an architecture: `width` hidden units (finite networks only) and `outputs` readouts.
template <class Phi>
ntk::Mlp<Phi> make_mlp(const Phi& phi, const Architecture& a, Eigen::Index width = 0, Eigen::Index outputs = 1) {
  ntk::Mlp<Phi> net = ntk::mlp(phi, a.depth, width, a.sigma_w.at(0), a.sigma_b.at(0), outputs);
  const std::size_t layers = net.dense.size();
  for (const auto* list : {&a.sigma_w, &a.sigma_b})
    if (list->size() != 1 && list->size() != layers)
      throw py::value_error(
          "ntk: sigma_w and sigma_b must be one number or a list of depth + 1 = " + std::to_string(layers) +
          " numbers, one per affine layer (got " + std::to_string(list->size()) + ")");
  for (std::size_t l = 0; l < layers; ++l) {
    net.dense[l].sigma_w = a.sigma_w.size() == 1 ? a.sigma_w[0] : a.sigma_w[l];
    net.dense[l].sigma_b = a.sigma_b.size() == 1 ? a.sigma_b[0] : a.sigma_b[l];
    net.dense[l].check("mlp");
  }
  return net;
}

void bind_kernel(py::module_& m);
void bind_network(py::module_& m);
void bind_dynamics(py::module_& m);
void bind_deep_limit(py::module_& m);
void bind_solvers(py::module_& m);
void bind_image(py::module_& m);

}  // namespace ntk_python
