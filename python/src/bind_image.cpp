// ntk._core: image architectures (conv.hpp) from SPEC strings (spec.hpp): kernels and finite networks.
#include <ntk/conv.hpp>
#include <ntk/spec.hpp>

#include <cstdint>
#include <string>

#include "common.hpp"

namespace ntk_python {

namespace {

using Rows = ntk::detail::RowMajorMatrix;

ntk::ImageArchitecture image_architecture(const std::string& spec, const std::string& shape) {
  return ntk::parse_architecture(spec, ntk::parse_shape(shape));
}

py::object image_kernel(const Eigen::Ref<const Rows>& x1, const py::object& x2, const std::string& spec,
                        const std::string& shape, const std::string& kind, int threads) {
  const ntk::ImageArchitecture arch = image_architecture(spec, shape);
  ntk::KernelKind k = ntk::KernelKind::both;
  if (kind == "ntk") {
    k = ntk::KernelKind::ntk;
  } else if (kind == "nngp") {
    k = ntk::KernelKind::nngp;
  } else if (kind != "both") {
    throw py::value_error("ntk.image_kernel: kind must be 'ntk', 'nngp' or 'both' (got '" + kind + "')");
  }
  ntk::ImageKernelOptions options;
  options.threads = threads;
  ntk::Kernels<double> result;
  if (x2.is_none()) {
    py::gil_scoped_release release;
    result = ntk::image_kernel(arch, x1, k, options);
  } else {
    const Rows b = x2.cast<Rows>();
    py::gil_scoped_release release;
    result = ntk::image_kernel(arch, x1, b, k, options);
  }
  if (k == ntk::KernelKind::both)
    return py::make_tuple(to_numpy(std::move(result.nngp)), to_numpy(std::move(result.ntk)));
  return to_numpy(std::move(k == ntk::KernelKind::nngp ? result.nngp : result.ntk));
}

}  // namespace

void bind_image(py::module_& m) {
  m.def("image_kernel", &image_kernel, py::arg("x1"), py::arg("x2"), py::arg("architecture"), py::arg("shape"),
        py::arg("kind"), py::arg("threads"));
  py::class_<ntk::ImageNetwork>(m, "ImageNetwork")
      .def(py::init([](const std::string& spec, const std::string& shape, std::uint64_t seed) {
             return ntk::ImageNetwork(image_architecture(spec, shape), seed);
           }),
           py::arg("architecture"), py::arg("shape"), py::arg("seed"))
      .def_property_readonly("parameter_count", &ntk::ImageNetwork::parameter_count)
      .def_property_readonly("output_dimension", &ntk::ImageNetwork::output_dimension)
      .def("parameters", [](const ntk::ImageNetwork& n) { return Eigen::VectorXd(n.parameters()); })
      .def("set_parameters",
           [](ntk::ImageNetwork& n, const Eigen::Ref<const Eigen::VectorXd>& theta) { n.set_parameters(theta); })
      .def(
          "forward",
          [](const ntk::ImageNetwork& n, const Eigen::Ref<const Rows>& x) {
            py::gil_scoped_release release;
            return Eigen::MatrixXd(n.forward(x));
          },
          py::arg("x"))
      .def(
          "jacobian",
          [](const ntk::ImageNetwork& n, const Eigen::Ref<const Rows>& x) {
            py::gil_scoped_release release;
            return Eigen::MatrixXd(n.jacobian(x));
          },
          py::arg("x"))
      .def(
          "empirical_ntk",
          [](const ntk::ImageNetwork& n, const Eigen::Ref<const Rows>& x1, const Eigen::Ref<const Rows>& x2) {
            py::gil_scoped_release release;
            return Eigen::MatrixXd(n.empirical_ntk(x1, x2));
          },
          py::arg("x1"), py::arg("x2"));
}

}  // namespace ntk_python
