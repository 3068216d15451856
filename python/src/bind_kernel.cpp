// ntk._core: the analytic NNGP / NTK Gram matrices.
#include <ntk/kernel.hpp>

#include "common.hpp"

namespace ntk_python {

namespace {

/// Whether the array's rows are contiguous (C-like) rather than its columns.
bool row_major(const py::array& a) {
  return a.strides(1) == a.itemsize() || a.shape(1) <= 1;
}

/// Calls f(m1, m2) with views of x1 and x2 of one map type (x2 may be None: then m2 is m1).
template <class S, class F>
decltype(auto) with_matrices(const py::array& x1, const py::object& x2, F&& f) {
  const bool two = !x2.is_none();
  const py::array b = two ? py::array(x2) : x1;
  if (two && b.ndim() == 2 && b.shape(0) > 1 && b.shape(1) > 1 && x1.shape(0) > 1 && x1.shape(1) > 1 &&
      row_major(x1) != row_major(b))
    throw py::value_error("ntk: internal: x1 and x2 must share a memory layout");
  return with_matrix<S>(x1, [&](const auto& m1) {
    using Map = std::decay_t<decltype(m1)>;
    const auto rows = static_cast<Eigen::Index>(b.shape(0)), cols = static_cast<Eigen::Index>(b.shape(1));
    const auto item = static_cast<py::ssize_t>(sizeof(S));
    const S* data = static_cast<const S*>(b.data());
    const Eigen::Index outer = std::is_same_v<Map, RowMap<S>>
                                   ? (rows <= 1 ? cols : static_cast<Eigen::Index>(b.strides(0) / item))
                                   : (cols <= 1 ? rows : static_cast<Eigen::Index>(b.strides(1) / item));
    const Map m2(data, rows, cols, Eigen::OuterStride<>(outer));
    return f(m1, m2, two);
  });
}

ntk::KernelKind parse_kind(const std::string& kind) {
  if (kind == "ntk") return ntk::KernelKind::ntk;
  if (kind == "nngp") return ntk::KernelKind::nngp;
  if (kind == "both") return ntk::KernelKind::both;
  throw py::value_error("ntk.kernel: kind must be 'ntk', 'nngp' or 'both' (got '" + kind + "')");
}

ntk::KernelOptions kernel_options(int threads, int quadrature, bool divide_by_dimension) {
  ntk::KernelOptions options;
  options.threads = threads;
  options.divide_by_dimension = divide_by_dimension;
  options.dual.quadrature_order = quadrature;  // > 0 also wraps the activation in ntk::Quadrature
  options.check("kernel");
  return options;
}

template <class S>
py::object kernel_typed(const py::array& x1, const py::object& x2, const ActivationSpec& activation,
                        const Architecture& arch, ntk::KernelKind kind, const ntk::KernelOptions& options) {
  ntk::Kernels<S> k;
  with_matrices<S>(x1, x2, [&](const auto& m1, const auto& m2, bool two) {
    with_activation(activation, options.dual.quadrature_order > 0, [&](const auto& phi) {
      const auto net = make_mlp(phi, arch);
      py::gil_scoped_release release;
      k = two ? ntk::kernel(net, m1, m2, kind, options) : ntk::kernel(net, m1, kind, options);
    });
  });
  if (kind == ntk::KernelKind::both) return py::make_tuple(to_numpy(std::move(k.nngp)), to_numpy(std::move(k.ntk)));
  return to_numpy(std::move(kind == ntk::KernelKind::nngp ? k.nngp : k.ntk));
}

template <class S>
py::list kernel_layers_typed(const py::array& x1, const py::object& x2, const ActivationSpec& activation,
                             const Architecture& arch, const ntk::KernelOptions& options) {
  std::vector<ntk::LayerKernels<S>> layers;
  with_matrices<S>(x1, x2, [&](const auto& m1, const auto& m2, bool) {
    with_activation(activation, options.dual.quadrature_order > 0, [&](const auto& phi) {
      const auto net = make_mlp(phi, arch);
      py::gil_scoped_release release;
      layers = ntk::kernel_layers(net, m1, m2, options);
    });
  });
  py::list out;
  for (auto& l : layers)
    out.append(
        py::make_tuple(to_numpy(std::move(l.nngp)), to_numpy(std::move(l.nngp_dot)), to_numpy(std::move(l.ntk))));
  return out;
}

template <class S>
py::tuple kernel_diagonal_typed(const py::array& x, const ActivationSpec& activation, const Architecture& arch,
                                const ntk::KernelOptions& options) {
  ntk::Kernels<S> k;
  with_matrices<S>(x, py::none(), [&](const auto& m, const auto&, bool) {
    with_activation(activation, options.dual.quadrature_order > 0, [&](const auto& phi) {
      const auto net = make_mlp(phi, arch);
      py::gil_scoped_release release;
      k = ntk::kernel_diagonal(net, m, options);
    });
  });
  Eigen::Matrix<S, Eigen::Dynamic, 1> nngp = k.nngp.col(0), ntk_diagonal = k.ntk.col(0);
  return py::make_tuple(py::cast(std::move(nngp)), py::cast(std::move(ntk_diagonal)));
}

bool is_float32(const py::array& a) {
  return a.dtype().is(py::dtype::of<float>());
}

}  // namespace

void bind_kernel(py::module_& m) {
  m.def(
      "kernel",
      [](const py::array& x1, const py::object& x2, const py::object& activation, long depth,
         std::vector<double> sigma_w, std::vector<double> sigma_b, const std::string& kind, int threads, int quadrature,
         bool divide_by_dimension) {
        const ActivationSpec spec = activation_spec(activation);
        const Architecture arch{depth, std::move(sigma_w), std::move(sigma_b)};
        const auto options = kernel_options(threads, quadrature, divide_by_dimension);
        return is_float32(x1) ? kernel_typed<float>(x1, x2, spec, arch, parse_kind(kind), options)
                              : kernel_typed<double>(x1, x2, spec, arch, parse_kind(kind), options);
      },
      py::arg("x1"), py::arg("x2"), py::arg("activation"), py::arg("depth"), py::arg("sigma_w"), py::arg("sigma_b"),
      py::arg("kind"), py::arg("threads"), py::arg("quadrature"), py::arg("divide_by_dimension"));
  m.def(
      "kernel_layers",
      [](const py::array& x1, const py::object& x2, const py::object& activation, long depth,
         std::vector<double> sigma_w, std::vector<double> sigma_b, int threads, int quadrature,
         bool divide_by_dimension) {
        const ActivationSpec spec = activation_spec(activation);
        const Architecture arch{depth, std::move(sigma_w), std::move(sigma_b)};
        const auto options = kernel_options(threads, quadrature, divide_by_dimension);
        return is_float32(x1) ? kernel_layers_typed<float>(x1, x2, spec, arch, options)
                              : kernel_layers_typed<double>(x1, x2, spec, arch, options);
      },
      py::arg("x1"), py::arg("x2"), py::arg("activation"), py::arg("depth"), py::arg("sigma_w"), py::arg("sigma_b"),
      py::arg("threads"), py::arg("quadrature"), py::arg("divide_by_dimension"));
  m.def(
      "kernel_diagonal",
      [](const py::array& x, const py::object& activation, long depth, std::vector<double> sigma_w,
         std::vector<double> sigma_b, int threads, int quadrature, bool divide_by_dimension) {
        const ActivationSpec spec = activation_spec(activation);
        const Architecture arch{depth, std::move(sigma_w), std::move(sigma_b)};
        const auto options = kernel_options(threads, quadrature, divide_by_dimension);
        return is_float32(x) ? kernel_diagonal_typed<float>(x, spec, arch, options)
                             : kernel_diagonal_typed<double>(x, spec, arch, options);
      },
      py::arg("x"), py::arg("activation"), py::arg("depth"), py::arg("sigma_w"), py::arg("sigma_b"), py::arg("threads"),
      py::arg("quadrature"), py::arg("divide_by_dimension"));
}

}  // namespace ntk_python
