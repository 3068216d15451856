#pragma once
/// \file errors.hpp
/// The argument checks every public entry point uses (ntk::detail, not part of the API) and the
/// exceptions ntk defines.  Messages have the form
/// "ntk::function_name: what is wrong (got X)".
///   - std::invalid_argument: bad shapes and bad parameters;
///   - std::domain_error: non-finite input (names the argument and the first bad index);
///   - std::overflow_error: a true result outside the range of the scalar type.

#include <Eigen/Core>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

#include "detail/config.hpp"

namespace ntk {

/// Thrown by Network::train and LinearizedNetwork::train when the loss or the parameters stop being
/// finite (a learning rate too large for the problem); the parameters are restored to their values
/// before train() was called.  step() is the first step whose loss or update was not finite
/// (0: the loss before any update).
class TrainingDiverged : public std::runtime_error {
 public:
  TrainingDiverged(const std::string& what, long step) : std::runtime_error(what), m_step(step) {}
  long step() const noexcept { return m_step; }

 private:
  long m_step;
};

namespace detail {

template <class Exception, class... Parts>
[[noreturn]] void fail(const char* function, const Parts&... parts) {
  std::ostringstream out;
  out.precision(17);
  out << "ntk::" << function << ": ";
  (out << ... << parts);
  throw Exception(out.str());
}

/// Throws std::overflow_error if a result computed from finite input has a non-finite entry: the
/// true value is beyond the scalar type (too large).
template <class Derived>
void check_result_finite(const char* function, const char* name, const Eigen::DenseBase<Derived>& m) {
  if (m.derived().allFinite()) return;
  for (Eigen::Index j = 0; j < m.cols(); ++j)
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      if (!std::isfinite(static_cast<long double>(m(i, j))))
        detail::fail<std::overflow_error>(function, name, " is too large for the scalar type at (", i, ", ", j,
                                          ") (got ", m(i, j), "; scale the inputs or parameters down)");
}

/// Throws std::domain_error if any entry of `m` is NaN or infinite; names the first bad (row, col).
template <class Derived>
void check_finite(const char* function, const char* name, const Eigen::DenseBase<Derived>& m) {
  for (Eigen::Index j = 0; j < m.cols(); ++j)
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
      const auto v = m(i, j);
      if (!std::isfinite(static_cast<long double>(v)))
        detail::fail<std::domain_error>(function, name, " has a non-finite entry at (", i, ", ", j, ") (got ", v, ")");
    }
}

/// Throws std::domain_error if the scalar `v` is not finite.
template <class Scalar>
void check_finite_scalar(const char* function, const char* name, Scalar v) {
  if (!std::isfinite(static_cast<long double>(v)))
    detail::fail<std::domain_error>(function, name, " must be finite (got ", v, ")");
}

/// Throws std::invalid_argument unless v > 0 (and finite).
template <class Scalar>
void check_positive(const char* function, const char* name, Scalar v) {
  if (!(v > 0) || !std::isfinite(static_cast<long double>(v)))
    detail::fail<std::invalid_argument>(function, name, " must be positive and finite (got ", v, ")");
}

/// Throws std::invalid_argument unless v >= 0 (and finite).
template <class Scalar>
void check_nonnegative(const char* function, const char* name, Scalar v) {
  if (!(v >= 0) || !std::isfinite(static_cast<long double>(v)))
    detail::fail<std::invalid_argument>(function, name, " must be non-negative and finite (got ", v, ")");
}

/// Throws std::invalid_argument unless v >= minimum.
template <class Integer>
void check_at_least(const char* function, const char* name, Integer v, Integer minimum) {
  if (v < minimum) detail::fail<std::invalid_argument>(function, name, " must be at least ", minimum, " (got ", v, ")");
}

/// Throws std::invalid_argument if `m` has no rows or no columns.
template <class Derived>
void check_nonempty(const char* function, const char* name, const Eigen::EigenBase<Derived>& m) {
  if (m.rows() == 0 || m.cols() == 0)
    detail::fail<std::invalid_argument>(function, name, " must not be empty (got ", m.rows(), " x ", m.cols(), ")");
}

/// Throws std::invalid_argument unless `m` has `rows` rows.
template <class Derived>
void check_rows(const char* function, const char* name, const Eigen::EigenBase<Derived>& m, Eigen::Index rows) {
  if (m.rows() != rows)
    detail::fail<std::invalid_argument>(function, name, " must have ", rows, " rows (got ", m.rows(), ")");
}

/// Throws std::invalid_argument unless `m` has `cols` columns.
template <class Derived>
void check_cols(const char* function, const char* name, const Eigen::EigenBase<Derived>& m, Eigen::Index cols) {
  if (m.cols() != cols)
    detail::fail<std::invalid_argument>(function, name, " must have ", cols, " columns (got ", m.cols(), ")");
}

/// Throws std::invalid_argument unless `m` is square and symmetric to a relative tolerance.
template <class Derived>
void check_symmetric(const char* function, const char* name, const Eigen::MatrixBase<Derived>& m,
                     double relative_tolerance = 1e-10) {
  if (m.rows() != m.cols())
    detail::fail<std::invalid_argument>(function, name, " must be square (got ", m.rows(), " x ", m.cols(), ")");
  using std::abs;
  const double scale = static_cast<double>(m.cwiseAbs().maxCoeff());
  const double asym = static_cast<double>((m - m.transpose()).cwiseAbs().maxCoeff());
  if (asym > relative_tolerance * scale)
    detail::fail<std::invalid_argument>(function, name, " must be symmetric (got max |m - m^T| = ", asym,
                                        " relative to max |m| = ", scale, ")");
}

}  // namespace detail
}  // namespace ntk
