#include "iterative.hpp"

#include <ntk/solvers.hpp>

#include <cmath>
#include <string>

namespace ntk_cli {

std::vector<Eigen::MatrixXd> iterative_predictions(
    const ntk::GramRef<double>& op, const Eigen::MatrixXd& y, const std::vector<double>& times,
    const IterativeSettings& s, Progress& progress,
    const std::function<Eigen::MatrixXd(const Eigen::MatrixXd&)>& cross_times) {
  const Eigen::Index n = y.rows(), k = y.cols();
  std::vector<double> finite;
  for (double t : times)
    if (std::isfinite(t)) finite.push_back(t);
  std::vector<Eigen::MatrixXd> factors;
  if (!finite.empty()) {
    ntk::ChebyshevOptions cheb;
    cheb.tolerance = s.tolerance;
    cheb.max_degree = s.max_iterations;
    progress.start("chebyshev");
    cheb.progress = [&](Eigen::Index it, double r) { progress.iteration(it, r); };
    ntk::SolverInfo info;
    factors = ntk::dynamics_factor(op, -y, finite, s.learning_rate, s.model, s.ridge, cheb, &info);
    progress.note("chebyshev degree " + std::to_string(info.iterations) + ", estimated error " +
                  std::to_string(info.residual) + ", " + std::to_string(info.solve_seconds) + " s");
  }
  Eigen::MatrixXd alpha;
  if (finite.size() < times.size()) {
    ntk::CgOptions cg;
    cg.tolerance = s.tolerance;
    cg.max_iterations = s.max_iterations;
    cg.preconditioner_rank = s.preconditioner_rank;
    progress.start("cg");
    cg.progress = [&](Eigen::Index it, double r) { progress.iteration(it, r); };
    ntk::SolverInfo info;
    alpha = ntk::cg_solve(op, y, s.ridge, cg, &info);
    progress.note("cg " + std::to_string(info.iterations) + " iterations, residual " + std::to_string(info.residual) +
                  ", preconditioner rank " + std::to_string(info.preconditioner_rank) + " " +
                  std::to_string(info.preconditioner_seconds) + " s, iterations " + std::to_string(info.solve_seconds) +
                  " s");
  }
  // every time's coefficients side by side: one pass over the test kernel
  Eigen::MatrixXd c(n, static_cast<Eigen::Index>(times.size()) * k);
  std::size_t f = 0;
  for (std::size_t i = 0; i < times.size(); ++i)
    c.middleCols(static_cast<Eigen::Index>(i) * k, k) =
        std::isfinite(times[i]) ? Eigen::MatrixXd(-factors[f++]) : alpha;
  const Eigen::MatrixXd all = cross_times(c);
  std::vector<Eigen::MatrixXd> predictions;
  for (std::size_t i = 0; i < times.size(); ++i)
    predictions.push_back(all.middleCols(static_cast<Eigen::Index>(i) * k, k));
  return predictions;
}

}  // namespace ntk_cli
