// ntk._core: kernel regression / linearized-dynamics predictions at any n through the solvers of
// solvers.hpp (dense eigendecomposition, Cholesky, CG on a packed or matrix-free operator,
// Chebyshev for finite times), the path chosen by ntk::plan_solver as `ntk predict` does.
#include <ntk/dynamics.hpp>
#include <ntk/kernel.hpp>
#include <ntk/solvers.hpp>

#include <cmath>
#include <limits>

#include "common.hpp"

namespace ntk_python {

namespace {

using M = Matrix<double>;

struct RegressionRequest {
  ntk::KernelKind kind = ntk::KernelKind::ntk;
  std::vector<double> times;
  double diag_reg = 0, tolerance = 1e-10, learning_rate = 1;
  long max_iterations = 1000, preconditioner_rank = 1000;
  std::size_t memory_limit = 0;
  std::string solver = "auto";
  ntk::KernelOptions kernel_options;
};

struct RegressionResult {
  std::vector<M> predictions;  // one per time, in the order asked
  ntk::SolverPlan plan;
  ntk::SolverInfo info;       // iterative paths: CG (t = inf) or, without t = inf, Chebyshev
  ntk::SolverInfo chebyshev;  // finite times on an iterative path
  bool fell_back = false;     // cholesky found G + λI not positive definite: eigendecomposition
};

ntk::SolverPlan plan(const RegressionRequest& r, Eigen::Index n, Eigen::Index k, Eigen::Index m) {
  ntk::SolverRequest q;
  q.n = n;
  q.k = k;
  q.test_points = m;
  q.finite_times = static_cast<Eigen::Index>(
      std::count_if(r.times.begin(), r.times.end(), [](double t) { return std::isfinite(t); }));
  q.infinite_time = q.finite_times < static_cast<Eigen::Index>(r.times.size());
  q.ridge = r.diag_reg;
  q.memory_limit = r.memory_limit;
  q.preconditioner_rank = r.preconditioner_rank;
  if (r.solver == "cg") {  // the stored triangle if it fits, else matrix-free (as ntk predict --solver cg)
    q.method = ntk::SolverMethod::packed;
    try {
      return ntk::plan_solver(q);
    } catch (const std::invalid_argument& e) {
      if (std::string(e.what()).find("cannot hold") == std::string::npos) throw;
      q.method = ntk::SolverMethod::matrix_free;
      return ntk::plan_solver(q);
    }
  }
  q.method = r.solver == "eigen"         ? ntk::SolverMethod::eigen
             : r.solver == "cholesky"    ? ntk::SolverMethod::cholesky
             : r.solver == "packed"      ? ntk::SolverMethod::packed
             : r.solver == "matrix-free" ? ntk::SolverMethod::matrix_free
                                         : ntk::SolverMethod::automatic;
  return ntk::plan_solver(q);
}

template <class Net>
RegressionResult regress(const Net& net, const M& x, const M& y, const M& xt, const RegressionRequest& r) {
  RegressionResult out;
  out.plan = plan(r, x.rows(), y.cols(), xt.rows());
  const auto& options = r.kernel_options;
  const auto method = out.plan.method;
  bool eigen = method == ntk::SolverMethod::eigen;
  if (method == ntk::SolverMethod::cholesky) {
    ntk::Kernels<double> train = ntk::kernel(net, x, r.kind, options);
    M g = std::move(r.kind == ntk::KernelKind::nngp ? train.nngp : train.ntk);
    M alpha = y;
    if (ntk::cholesky_solve_in_place<double>(g, r.diag_reg, alpha)) {
      out.predictions.push_back(ntk::cross_kernel_times(net, xt, x, r.kind, alpha, options));
    } else {
      out.fell_back = eigen = true;
    }
  } else if (method == ntk::SolverMethod::packed || method == ntk::SolverMethod::matrix_free) {
    const auto iterate = [&](const ntk::GramRef<double>& op) {  // one compiled solver for every operator
      std::vector<double> finite;
      for (double t : r.times)
        if (std::isfinite(t)) finite.push_back(t);
      std::vector<M> factors;
      if (!finite.empty()) {
        ntk::ChebyshevOptions cheb;
        cheb.tolerance = r.tolerance;
        cheb.max_degree = r.max_iterations;
        factors = ntk::dynamics_factor(op, -y, finite, r.learning_rate, ntk::TimeModel::continuous, r.diag_reg, cheb,
                                       &out.chebyshev);
        out.info = out.chebyshev;
      }
      M alpha;
      if (finite.size() < r.times.size()) {
        ntk::CgOptions cg;
        cg.tolerance = r.tolerance;
        cg.max_iterations = r.max_iterations;
        cg.preconditioner_rank = r.preconditioner_rank;
        alpha = ntk::cg_solve(op, y, r.diag_reg, cg, &out.info);
      }
      const Eigen::Index k = y.cols();
      M c(x.rows(), static_cast<Eigen::Index>(r.times.size()) * k);  // every time's coefficients: one pass
      std::size_t f = 0;
      for (std::size_t i = 0; i < r.times.size(); ++i)
        c.middleCols(static_cast<Eigen::Index>(i) * k, k) = std::isfinite(r.times[i]) ? M(-factors[f++]) : alpha;
      const M all = ntk::cross_kernel_times(net, xt, x, r.kind, c, options);
      for (std::size_t i = 0; i < r.times.size(); ++i)
        out.predictions.push_back(all.middleCols(static_cast<Eigen::Index>(i) * k, k));
    };
    if (method == ntk::SolverMethod::packed)
      iterate(ntk::packed_gram(net, x, r.kind, options));
    else
      iterate(ntk::MatrixFreeGram(net, x, r.kind, options));
  }
  if (eigen) {
    const ntk::Kernels<double> train = ntk::kernel(net, x, r.kind, options);
    const ntk::Kernels<double> cross = ntk::kernel(net, xt, x, r.kind, options);
    ntk::DynamicsOptions dyn;
    dyn.learning_rate = r.learning_rate;
    dyn.diag_reg = r.diag_reg;
    const bool nngp = r.kind == ntk::KernelKind::nngp;
    const ntk::LinearizedDynamics<double> dynamics(nngp ? train.nngp : train.ntk, y, M(), dyn);
    const auto projection = dynamics.project(nngp ? cross.nngp : cross.ntk);
    out.predictions = dynamics.test_predictions(projection, r.times);
  }
  return out;
}

py::dict info_dict(const RegressionResult& r) {
  py::dict d;
  d["method"] = r.fell_back ? std::string("eigen") : std::string(ntk::method_name(r.plan.method));
  d["reason"] = r.fell_back ? std::string(
                                  "cholesky: the Gram matrix plus ridge is not positive definite; "
                                  "eigendecomposition (pseudo-inverse) instead")
                            : r.plan.reason;
  d["memory_estimate"] = r.plan.bytes;
  const bool iterative = r.plan.method == ntk::SolverMethod::packed || r.plan.method == ntk::SolverMethod::matrix_free;
  d["iterations"] = iterative ? py::object(py::int_(r.info.iterations)) : py::object(py::none());
  d["residual"] = iterative ? py::object(py::float_(r.info.residual)) : py::object(py::none());
  d["converged"] = iterative ? py::object(py::bool_(r.info.converged)) : py::object(py::none());
  d["chebyshev_degree"] =
      r.chebyshev.iterations > 0 ? py::object(py::int_(r.chebyshev.iterations)) : py::object(py::none());
  d["chebyshev_error"] =
      r.chebyshev.iterations > 0 ? py::object(py::float_(r.chebyshev.residual)) : py::object(py::none());
  d["preconditioner_rank"] = iterative ? py::object(py::int_(r.info.preconditioner_rank)) : py::object(py::none());
  return d;
}

}  // namespace

void bind_solvers(py::module_& m) {
  m.def(
      "kernel_regression",
      [](const M& x, const M& y, const M& xt, const py::object& activation, long depth, std::vector<double> sigma_w,
         std::vector<double> sigma_b, const std::string& kind, std::vector<double> times, double diag_reg,
         const std::string& solver, double tolerance, long max_iterations, long preconditioner_rank,
         std::size_t memory_limit, int threads, double learning_rate) {
        const char* fn = "ntk.kernel_regression";
        const ActivationSpec spec = activation_spec(activation);
        const Architecture arch{depth, std::move(sigma_w), std::move(sigma_b)};
        RegressionRequest r;
        if (kind != "ntk" && kind != "nngp")
          throw py::value_error(std::string(fn) + ": kind must be 'ntk' or 'nngp' (got '" + kind + "')");
        r.kind = kind == "ntk" ? ntk::KernelKind::ntk : ntk::KernelKind::nngp;
        for (const char* s : {"auto", "eigen", "cholesky", "cg", "packed", "matrix-free"})
          if (solver == s) r.solver = solver;
        if (r.solver != solver)
          throw py::value_error(std::string(fn) +
                                ": solver must be 'auto', 'eigen', 'cholesky', 'cg', 'packed' or 'matrix-free' (got '" +
                                solver + "')");
        if (times.empty()) throw py::value_error(std::string(fn) + ": time must be a number or a non-empty list");
        for (double t : times)
          if (!(t >= 0))
            throw py::value_error(std::string(fn) + ": every time must be >= 0 or inf (got " + std::to_string(t) + ")");
        if (!(diag_reg >= 0) || !std::isfinite(diag_reg))
          throw py::value_error(std::string(fn) + ": diag_reg must be a finite number >= 0 (got " +
                                std::to_string(diag_reg) + ")");
        if (!(tolerance > 0) || !(tolerance < 1))
          throw py::value_error(std::string(fn) + ": tolerance must be in (0, 1) (got " + std::to_string(tolerance) +
                                ")");
        if (max_iterations < 1 || preconditioner_rank < 0)
          throw py::value_error(std::string(fn) + ": max_iterations must be >= 1 and preconditioner_rank >= 0");
        if (x.rows() != y.rows())
          throw py::value_error(std::string(fn) + ": y_train must have one row per x_train row (got " +
                                std::to_string(y.rows()) + " for " + std::to_string(x.rows()) + ")");
        r.times = std::move(times);
        r.diag_reg = diag_reg;
        r.solver = solver;
        r.tolerance = tolerance;
        r.max_iterations = max_iterations;
        r.preconditioner_rank = preconditioner_rank;
        r.memory_limit = memory_limit;
        r.learning_rate = learning_rate;
        r.kernel_options.threads = threads;
        r.kernel_options.check("kernel_regression");
        RegressionResult result = with_activation(spec, [&](const auto& phi) {
          const auto net = make_mlp(phi, arch);
          py::gil_scoped_release release;
          return regress(net, x, y, xt, r);
        });
        py::list predictions;
        for (auto& p : result.predictions) predictions.append(to_numpy(std::move(p)));
        return py::make_tuple(predictions, info_dict(result));
      },
      py::arg("x_train"), py::arg("y_train"), py::arg("x_test"), py::arg("activation"), py::arg("depth"),
      py::arg("sigma_w"), py::arg("sigma_b"), py::arg("kind"), py::arg("times"), py::arg("diag_reg"), py::arg("solver"),
      py::arg("tolerance"), py::arg("max_iterations"), py::arg("preconditioner_rank"), py::arg("memory_limit"),
      py::arg("threads"), py::arg("learning_rate"));
}

}  // namespace ntk_python
