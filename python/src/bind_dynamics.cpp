// ntk._core: closed-form linearized dynamics (float64).
#include <ntk/dynamics.hpp>

#include <functional>

#include "common.hpp"

namespace ntk_python {

namespace {

using Dynamics = ntk::LinearizedDynamics<double>;
using M = Matrix<double>;
using Ref = Eigen::Ref<const M>;

std::vector<M> release_each(const std::vector<double>& times, const std::function<M(double)>& f) {
  std::vector<M> out;
  py::gil_scoped_release release;
  for (double t : times) out.push_back(f(t));
  return out;
}

py::list to_list(std::vector<M>&& ms) {
  py::list out;
  for (auto& m : ms) out.append(to_numpy(std::move(m)));
  return out;
}

}  // namespace

void bind_dynamics(py::module_& m) {
  py::class_<Dynamics>(m, "LinearizedDynamics")
      .def(py::init([](const Ref& g0, const Ref& y, const py::object& f0, double learning_rate, bool discrete,
                       double diag_reg, bool diag_reg_relative, double pinv_tolerance) {
             ntk::DynamicsOptions options;
             options.learning_rate = learning_rate;
             options.time = discrete ? ntk::TimeModel::discrete : ntk::TimeModel::continuous;
             options.diag_reg = diag_reg;
             options.diag_reg_relative = diag_reg_relative;
             options.pinv_tolerance = pinv_tolerance;
             const M start = f0.is_none() ? M() : f0.cast<M>();
             py::gil_scoped_release release;
             return std::make_unique<Dynamics>(g0, y, start, options);
           }),
           py::arg("g0"), py::arg("y"), py::arg("f0"), py::arg("learning_rate"), py::arg("discrete"),
           py::arg("diag_reg"), py::arg("diag_reg_relative"), py::arg("pinv_tolerance"))
      .def_property_readonly("eigenvalues", [](const Dynamics& d) { return Eigen::VectorXd(d.eigenvalues()); })
      .def_property_readonly("max_learning_rate", &Dynamics::max_learning_rate)
      .def(
          "train_predictions",
          [](const Dynamics& d, const std::vector<double>& times) {
            return to_list(release_each(times, [&](double t) { return d.train_predictions(t); }));
          },
          py::arg("times"))
      .def(
          "train_loss",
          [](const Dynamics& d, const std::vector<double>& times) {
            py::gil_scoped_release release;
            return d.train_loss(times);
          },
          py::arg("times"))
      .def(
          "test_predictions",
          [](const Dynamics& d, const Ref& kernel_test_train, const std::vector<double>& times,
             const py::object& f0_test) {
            const M f0 = f0_test.is_none() ? M() : f0_test.cast<M>();
            std::vector<M> out;
            {
              py::gil_scoped_release release;
              const auto projection = d.project(kernel_test_train, f0);
              out = d.test_predictions(projection, times);
            }
            return to_list(std::move(out));
          },
          py::arg("kernel_test_train"), py::arg("times"), py::arg("f0_test"))
      .def(
          "parameter_change",
          [](const Dynamics& d, const Ref& jacobian, const std::vector<double>& times) {
            py::list out;
            std::vector<Eigen::VectorXd> changes;
            {
              py::gil_scoped_release release;
              for (double t : times) changes.push_back(d.parameter_change(jacobian, t));
            }
            for (auto& c : changes) out.append(py::cast(std::move(c)));
            return out;
          },
          py::arg("jacobian"), py::arg("times"))
      .def(
          "ntk_gp_covariance",
          [](const Dynamics& d, const Ref& theta_test_train, const M& nngp_train_train, const M& nngp_test_train,
             const M& nngp_test_test, const std::vector<double>& times) {
            std::vector<M> out;
            {
              py::gil_scoped_release release;
              const auto projection = d.project(theta_test_train);
              for (double t : times)
                out.push_back(d.ntk_gp_covariance(projection, nngp_train_train, nngp_test_train, nngp_test_test, t));
            }
            return to_list(std::move(out));
          },
          py::arg("theta_test_train"), py::arg("nngp_train_train"), py::arg("nngp_test_train"),
          py::arg("nngp_test_test"), py::arg("times"))
      .def(
          "nngp_gp_covariance",
          [](const Dynamics& d, const Ref& nngp_test_train, const M& nngp_test_test, const std::vector<double>& times) {
            std::vector<M> out;
            {
              py::gil_scoped_release release;
              const auto projection = d.project(nngp_test_train);
              for (double t : times) out.push_back(d.nngp_gp_covariance(projection, nngp_test_test, t));
            }
            return to_list(std::move(out));
          },
          py::arg("nngp_test_train"), py::arg("nngp_test_test"), py::arg("times"));
}

}  // namespace ntk_python
