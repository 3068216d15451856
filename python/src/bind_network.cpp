// ntk._core: finite-width networks (forward, Jacobian, empirical NTK, training).
#include <ntk/network.hpp>

#include "common.hpp"

namespace ntk_python {

namespace {

/// A Network of any activation and scalar type, behind one interface for Python.  Inputs arrive
/// as float64 or float32 column-major matrices (pybind11 converts, copying only when needed).
class AnyNetwork {
 public:
  virtual ~AnyNetwork() = default;
  virtual py::object parameters() const = 0;
  virtual void set_parameters(const py::array& theta) = 0;
  virtual py::object forward(const py::array& x) const = 0;
  virtual py::object jacobian(const py::array& x) const = 0;
  virtual py::object empirical_ntk(const py::array& x1, const py::object& x2, bool full, bool via_jacobian) const = 0;
  virtual double loss(const py::array& x, const py::array& y) const = 0;
  virtual py::object gradient(const py::array& x, const py::array& y) const = 0;
  virtual py::dict train(const py::array& x, const py::array& y, double learning_rate, long steps, bool record_ntk) = 0;
  virtual Eigen::Index input_dimension() const = 0;
  virtual Eigen::Index output_dimension() const = 0;
  virtual Eigen::Index parameter_count() const = 0;
};

template <class Phi, class S>
class NetworkOf final : public AnyNetwork {
 public:
  using M = Matrix<S>;
  using V = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  NetworkOf(const Phi& phi, const Architecture& arch, Eigen::Index input_dimension, Eigen::Index width,
            Eigen::Index outputs, std::uint64_t seed)
      : m_net(make_mlp(phi, arch, width, outputs), input_dimension, seed) {}

  py::object parameters() const override { return py::cast(V(m_net.parameters())); }
  void set_parameters(const py::array& theta) override {
    const V t = theta.cast<V>();
    m_net.set_parameters(t);
  }
  py::object forward(const py::array& x) const override {
    const M a = x.cast<M>();
    M out;
    {
      py::gil_scoped_release release;
      out = m_net.forward(a);
    }
    return to_numpy(std::move(out));
  }
  py::object jacobian(const py::array& x) const override {
    const M a = x.cast<M>();
    M out;
    {
      py::gil_scoped_release release;
      out = m_net.jacobian(a);
    }
    return to_numpy(std::move(out));
  }
  py::object empirical_ntk(const py::array& x1, const py::object& x2, bool full, bool via_jacobian) const override {
    const M a = x1.cast<M>();
    const M b = x2.is_none() ? M() : x2.cast<M>();
    const auto outputs = full ? ntk::NtkOutputs::full : ntk::NtkOutputs::averaged;
    M out;
    {
      py::gil_scoped_release release;
      const M& other = x2.is_none() ? a : b;
      out = via_jacobian ? m_net.empirical_ntk_via_jacobian(a, other, outputs) : m_net.empirical_ntk(a, other, outputs);
    }
    return to_numpy(std::move(out));
  }
  double loss(const py::array& x, const py::array& y) const override {
    const M a = x.cast<M>(), b = y.cast<M>();
    py::gil_scoped_release release;
    return static_cast<double>(m_net.loss(a, b));
  }
  py::object gradient(const py::array& x, const py::array& y) const override {
    const M a = x.cast<M>(), b = y.cast<M>();
    V g;
    {
      py::gil_scoped_release release;
      g = m_net.gradient(a, b);
    }
    return py::cast(std::move(g));
  }
  py::dict train(const py::array& x, const py::array& y, double learning_rate, long steps, bool record_ntk) override {
    const M a = x.cast<M>(), b = y.cast<M>();
    ntk::TrainOptions options;
    options.learning_rate = learning_rate;
    options.steps = steps;
    options.record_ntk = record_ntk;
    ntk::TrainHistory<S> history;
    {
      py::gil_scoped_release release;
      history = m_net.train(a, b, options);
    }
    py::dict out;
    out["loss"] = py::cast(Eigen::Matrix<S, Eigen::Dynamic, 1>(Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, 1>>(
        history.loss.data(), static_cast<Eigen::Index>(history.loss.size()))));
    out["ntk_before"] = record_ntk ? to_numpy(std::move(history.ntk_before)) : py::object(py::none());
    out["ntk_after"] = record_ntk ? to_numpy(std::move(history.ntk_after)) : py::object(py::none());
    return out;
  }
  Eigen::Index input_dimension() const override { return m_net.input_dimension(); }
  Eigen::Index output_dimension() const override { return m_net.output_dimension(); }
  Eigen::Index parameter_count() const override { return m_net.parameter_count(); }

 private:
  ntk::Network<ntk::Mlp<Phi>, S> m_net;
};

}  // namespace

void bind_network(py::module_& m) {
  py::class_<AnyNetwork>(m, "Network")
      .def(py::init([](Eigen::Index input_dimension, const py::object& activation, long depth, Eigen::Index width,
                       Eigen::Index outputs, std::vector<double> sigma_w, std::vector<double> sigma_b,
                       std::uint64_t seed, const std::string& dtype) {
             if (dtype != "float64" && dtype != "float32")
               throw py::value_error("ntk.Network: dtype must be 'float64' or 'float32' (got '" + dtype + "')");
             const ActivationSpec spec = activation_spec(activation);
             const Architecture arch{depth, std::move(sigma_w), std::move(sigma_b)};
             return with_activation(spec, [&](const auto& phi) -> std::unique_ptr<AnyNetwork> {
               using Phi = std::decay_t<decltype(phi)>;
               if (dtype == "float32")
                 return std::make_unique<NetworkOf<Phi, float>>(phi, arch, input_dimension, width, outputs, seed);
               return std::make_unique<NetworkOf<Phi, double>>(phi, arch, input_dimension, width, outputs, seed);
             });
           }),
           py::arg("input_dimension"), py::arg("activation"), py::arg("depth"), py::arg("width"), py::arg("outputs"),
           py::arg("sigma_w"), py::arg("sigma_b"), py::arg("seed"), py::arg("dtype"))
      .def_property("parameters", &AnyNetwork::parameters, &AnyNetwork::set_parameters)
      .def("forward", &AnyNetwork::forward, py::arg("x"))
      .def("jacobian", &AnyNetwork::jacobian, py::arg("x"))
      .def("empirical_ntk", &AnyNetwork::empirical_ntk, py::arg("x1"), py::arg("x2"), py::arg("full"),
           py::arg("via_jacobian"))
      .def("loss", &AnyNetwork::loss, py::arg("x"), py::arg("y"))
      .def("gradient", &AnyNetwork::gradient, py::arg("x"), py::arg("y"))
      .def("train", &AnyNetwork::train, py::arg("x"), py::arg("y"), py::arg("learning_rate"), py::arg("steps"),
           py::arg("record_ntk"))
      .def_property_readonly("input_dimension", &AnyNetwork::input_dimension)
      .def_property_readonly("output_dimension", &AnyNetwork::output_dimension)
      .def_property_readonly("parameter_count", &AnyNetwork::parameter_count);
}

}  // namespace ntk_python
