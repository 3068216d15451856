// The ntk._core extension module: activations from Python and the module definition.
#include <ntk/version.hpp>

#include <cmath>
#include <cstring>
#include <sstream>

#include "common.hpp"

namespace ntk_python {

struct PythonActivation::Callables {
  py::object phi, dphi;
};

PythonActivation::PythonActivation(py::object phi, py::object dphi) {
  // py::object copies and destructions need the GIL; library code copies activations freely (and
  // may drop the last copy with the GIL released), so the callables live behind a shared_ptr whose
  // deleter takes the GIL.
  m_callables = std::shared_ptr<Callables>(new Callables{std::move(phi), std::move(dphi)}, [](Callables* c) {
    py::gil_scoped_acquire gil;
    delete c;
  });
}

double PythonActivation::step(double z) {
  // A power of two near 1e-3 max(1, |z|): the four points z ± h, z ± 2h are exact for |z| >= 1.
  return std::ldexp(1.0, -10) * std::max(1.0, std::exp2(std::ceil(std::log2(std::fabs(z) + 1e-300))));
}

namespace {

[[noreturn]] void raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

/// Calls `f` on the float64 array z and copies its result into out[0, n), checking it.
void call_into(const py::object& f, const char* which, const py::array_t<double>& z, double* out) {
  const std::size_t n = static_cast<std::size_t>(z.size());
  py::object result = f(z);
  py::array_t<double, py::array::forcecast> values;
  try {
    values = py::array_t<double, py::array::forcecast>::ensure(result);
  } catch (py::error_already_set&) {
    values = py::array_t<double, py::array::forcecast>();
  }
  if (!values || values.ndim() != 1 || static_cast<std::size_t>(values.size()) != n) {
    std::ostringstream s;
    s << "ntk: activation callable " << which
      << " must map a 1-D float64 array to a 1-D array of the same length (got ";
    if (!values) {
      s << "an object of type " << py::str(py::type::handle_of(result).attr("__name__")).cast<std::string>();
    } else {
      s << "shape (";
      for (py::ssize_t k = 0; k < values.ndim(); ++k) s << (k ? ", " : "") << values.shape(k);
      s << (values.ndim() == 1 ? ",)" : ")");
    }
    s << " for an input of shape (" << n << ",))";
    PyErr_Clear();
    raise(PyExc_ValueError, s.str());
  }
  const double* v = values.data();
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) {
      std::ostringstream s;
      s.precision(17);
      s << "ntk: activation callable " << which << " returned a non-finite value (" << v[i]
        << ") at z = " << z.data()[i];
      raise(PyExc_FloatingPointError, s.str());
    }
  std::memcpy(out, v, n * sizeof(double));
}

}  // namespace

void PythonActivation::values_and_derivatives(const double* z, double* v, double* dv, std::size_t n) const {
  if (n == 0) return;
  if (!m_callables) throw std::logic_error("ntk: a Python activation without callables was evaluated");
  py::gil_scoped_acquire gil;
  py::array_t<double> points(static_cast<py::ssize_t>(n));
  std::memcpy(points.mutable_data(), z, n * sizeof(double));
  if (v) call_into(m_callables->phi, "phi", points, v);
  if (!dv) return;
  if (!m_callables->dphi.is_none()) {
    call_into(m_callables->dphi, "dphi", points, dv);
    return;
  }
  // φ'(z) ≈ [8 (φ(z + h) − φ(z − h)) − (φ(z + 2h) − φ(z − 2h))] / (12 h): truncation h⁴ |φ⁽⁵⁾| / 30,
  // rounding about 1.5 ε |φ| / h; with h ≈ 1e-3 max(1, |z|) about 1e-12 for smooth φ of unit scale.
  py::array_t<double> shifted(static_cast<py::ssize_t>(4 * n));
  double* s = shifted.mutable_data();
  for (std::size_t i = 0; i < n; ++i) {
    const double h = step(z[i]);
    s[i] = z[i] + h;
    s[n + i] = z[i] - h;
    s[2 * n + i] = z[i] + 2 * h;
    s[3 * n + i] = z[i] - 2 * h;
  }
  std::vector<double> f(4 * n);
  call_into(m_callables->phi, "phi", shifted, f.data());
  for (std::size_t i = 0; i < n; ++i)
    dv[i] = (8 * (f[i] - f[n + i]) - (f[2 * n + i] - f[3 * n + i])) / (12 * step(z[i]));
}

void PythonActivation::values_and_derivatives(const float* z, float* v, float* dv, std::size_t n) const {
  std::vector<double> zd(z, z + n), vd(v ? n : 0), dd(dv ? n : 0);
  values_and_derivatives(zd.data(), v ? vd.data() : nullptr, dv ? dd.data() : nullptr, n);
  for (std::size_t i = 0; i < n; ++i) {
    if (v) v[i] = static_cast<float>(vd[i]);
    if (dv) dv[i] = static_cast<float>(dd[i]);
  }
}

ActivationSpec activation_spec(const py::object& activation) {
  ActivationSpec spec;
  if (py::isinstance<py::str>(activation)) {
    spec.name = activation.cast<std::string>();
    ntk::with_activation(spec.name, [](const auto&) {});  // an unknown name fails here
    return spec;
  }
  if (py::isinstance<py::tuple>(activation) || py::isinstance<py::list>(activation)) {
    const py::sequence pair = activation;
    if (pair.size() != 2 || !PyCallable_Check(py::object(pair[0]).ptr()) ||
        !PyCallable_Check(py::object(pair[1]).ptr()))
      throw py::type_error(
          "ntk: activation must be a name, a vectorized callable phi, or a pair "
          "(phi, dphi) of vectorized callables (got a sequence of " +
          std::to_string(pair.size()) + " items that is not such a pair)");
    spec.python = std::make_shared<PythonActivation>(py::object(pair[0]), py::object(pair[1]));
    return spec;
  }
  if (PyCallable_Check(activation.ptr())) {
    spec.python = std::make_shared<PythonActivation>(activation, py::none());
    return spec;
  }
  throw py::type_error("ntk: activation must be a name (" + std::string(ntk::activation_names) +
                       "), a vectorized callable phi, or a pair (phi, dphi) (got " +
                       py::str(py::type::handle_of(activation).attr("__name__")).cast<std::string>() + ")");
}

}  // namespace ntk_python

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  m.doc() = "ntk C++ core (pybind11): use the ntk package, not this module directly";
  m.attr("__version__") = ntk::version_string;
  m.attr("activation_names") = ntk::activation_names;
  m.def("numerical_derivative_step", &ntk_python::PythonActivation::step,
        "The step h of the numerical derivative at z (power of two near 1e-3 max(1, |z|)).");
  // std::invalid_argument / domain_error -> ValueError, overflow_error -> OverflowError (pybind11's
  // defaults); the library's logic_error (wrong call order) -> RuntimeError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::logic_error& e) {
      if (dynamic_cast<const std::invalid_argument*>(&e) || dynamic_cast<const std::domain_error*>(&e) ||
          dynamic_cast<const std::length_error*>(&e) || dynamic_cast<const std::out_of_range*>(&e))
        PyErr_SetString(PyExc_ValueError, e.what());
      else
        PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const std::overflow_error& e) {
      PyErr_SetString(PyExc_OverflowError, e.what());
    } catch (const std::range_error& e) {
      PyErr_SetString(PyExc_FloatingPointError, e.what());
    } catch (const std::underflow_error& e) {
      PyErr_SetString(PyExc_FloatingPointError, e.what());
    }
  });
  ntk_python::bind_kernel(m);
  ntk_python::bind_network(m);
  ntk_python::bind_dynamics(m);
  ntk_python::bind_deep_limit(m);
  ntk_python::bind_solvers(m);
  ntk_python::bind_image(m);
}
