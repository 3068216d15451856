// ntk._core: the deep limit (constants, deep kernels, classifiers).
#include <ntk/deep_limit.hpp>

#include "common.hpp"

namespace ntk_python {

namespace {

using M = Matrix<double>;
using Ref = Eigen::Ref<const M>;

ntk::DeepKind parse_deep_kind(const std::string& kind) {
  if (kind == "ntk") return ntk::DeepKind::ntk;
  if (kind == "nngp") return ntk::DeepKind::nngp;
  throw py::value_error("ntk: kind must be 'ntk' or 'nngp' (got '" + kind + "')");
}

/// A DeepKernelClassifier of any activation.
class AnyDeepClassifier {
 public:
  virtual ~AnyDeepClassifier() = default;
  virtual void fit(const Ref& x, const std::vector<int>& labels) = 0;
  virtual std::vector<int> predict(const Ref& x) const = 0;
};

template <class Phi>
class DeepClassifierOf final : public AnyDeepClassifier {
 public:
  DeepClassifierOf(const Phi& phi, long depth, ntk::DeepKind kind) : m_classifier(phi, depth, kind) {}
  void fit(const Ref& x, const std::vector<int>& labels) override {
    py::gil_scoped_release release;
    m_classifier.fit(x, labels);
  }
  std::vector<int> predict(const Ref& x) const override {
    py::gil_scoped_release release;
    return m_classifier.predict(x);
  }

 private:
  ntk::DeepKernelClassifier<Phi> m_classifier;
};

}  // namespace

void bind_deep_limit(py::module_& m) {
  m.def(
      "limit_constants",
      [](const py::object& activation) {
        const ActivationSpec spec = activation_spec(activation);
        const ntk::LimitConstants c = with_activation(spec, [](const auto& phi) {
          py::gil_scoped_release release;
          return ntk::limit_constants(phi);
        });
        py::dict out;
        out["E_phi"] = c.E_phi;
        out["E_dphi"] = c.E_dphi;
        out["E_dphi2"] = c.E_dphi2;
        out["E_phi2"] = c.E_phi2;
        out["A"] = c.A;
        out["A_prime"] = c.A_prime;
        out["B"] = c.B;
        out["alpha"] = c.alpha;
        out["regime"] = std::string(ntk::to_string(c.regime));
        return out;
      },
      py::arg("activation"));
  m.def(
      "deep_kernel",
      [](const Ref& x1, const Ref& x2, const py::object& activation, long depth, const std::string& kind) {
        const ActivationSpec spec = activation_spec(activation);
        ntk::DeepGram g = with_activation(spec, [&](const auto& phi) {
          const ntk::DeepKind which = parse_deep_kind(kind);
          py::gil_scoped_release release;
          const ntk::DeepKernel<std::decay_t<decltype(phi)>> k(phi, depth, which);
          return k.gram(x1, x2);
        });
        const double log_diagonal = g.log_diagonal;
        return py::make_tuple(to_numpy(std::move(g.sign)), to_numpy(std::move(g.log_abs)), log_diagonal);
      },
      py::arg("x1"), py::arg("x2"), py::arg("activation"), py::arg("depth"), py::arg("kind"));
  py::class_<AnyDeepClassifier>(m, "DeepKernelClassifier")
      .def(py::init([](const py::object& activation, long depth, const std::string& kind) {
             const ActivationSpec spec = activation_spec(activation);
             const ntk::DeepKind which = parse_deep_kind(kind);
             return with_activation(spec, [&](const auto& phi) -> std::unique_ptr<AnyDeepClassifier> {
               py::gil_scoped_release release;
               return std::make_unique<DeepClassifierOf<std::decay_t<decltype(phi)>>>(phi, depth, which);
             });
           }),
           py::arg("activation"), py::arg("depth"), py::arg("kind"))
      .def("fit", &AnyDeepClassifier::fit, py::arg("x"), py::arg("labels"))
      .def("predict", &AnyDeepClassifier::predict, py::arg("x"));
  m.def(
      "majority_vote",
      [](const std::vector<int>& labels, Eigen::Index count) { return ntk::majority_vote(labels, count); },
      py::arg("labels"), py::arg("count"));
  m.def(
      "nearest_neighbor",
      [](const Ref& x, const std::vector<int>& labels, const Ref& test) {
        py::gil_scoped_release release;
        return ntk::nearest_neighbor(x, labels, test);
      },
      py::arg("x"), py::arg("labels"), py::arg("test"));
  m.def(
      "singular_kernel",
      [](const Ref& x, const std::vector<int>& labels, const Ref& test, double alpha) {
        py::gil_scoped_release release;
        return ntk::singular_kernel(x, labels, test, alpha);
      },
      py::arg("x"), py::arg("labels"), py::arg("test"), py::arg("alpha"));
}

}  // namespace ntk_python
