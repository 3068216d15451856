#pragma once
// The iterative path of `ntk predict` (--solver cg), shared by the single-process tool and the
// MPI one: Chebyshev for the finite times, preconditioned CG for t = inf, on any Gram operator.
#include <ntk/dynamics.hpp>
#include <ntk/gram.hpp>

#include <functional>
#include <vector>

#include "progress.hpp"

namespace ntk_cli {

struct IterativeSettings {
  double learning_rate = 1, ridge = 0, tolerance = 1e-8;
  long max_iterations = 1000, preconditioner_rank = 1000;
  ntk::TimeModel model = ntk::TimeModel::continuous;
};

/// Predictions at every time of `times` (in order): the training-set coefficients C_t of each time
/// from one Chebyshev expansion (finite times) and one CG solve (t = inf), then one pass of
/// cross_times(C) = kernel(x_test, X) C over all of them side by side.  Progress and a summary
/// line per solver go to `progress`.  Compiled once (iterative.cpp) for every operator.
std::vector<Eigen::MatrixXd> iterative_predictions(
    const ntk::GramRef<double>& op, const Eigen::MatrixXd& y, const std::vector<double>& times,
    const IterativeSettings& settings, Progress& progress,
    const std::function<Eigen::MatrixXd(const Eigen::MatrixXd&)>& cross_times);

}  // namespace ntk_cli
