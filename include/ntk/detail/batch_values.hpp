#pragma once
/// \file detail/batch_values.hpp
/// Activations evaluated many points per call: the optional batch member of the activation
/// contract and the helpers the setup paths use to evaluate φ and φ' on all their nodes at once.
///   optional  void values_and_derivatives(const S* z, S* v, S* dv, std::size_t n) const
///                 v[i] = φ(z[i]), dv[i] = φ'(z[i]) for i < n (v or dv may be null); detected by
///                 has_batch_values.  Worth having when one call has a large fixed cost (an
///                 interpreter: the Python package's callables).
///             static constexpr bool batch_only = true
///                 the type must not be evaluated point by point where that would mean one call per
///                 kernel entry, nor from several threads at once: kernels then refuse per-entry
///                 quadrature (std::invalid_argument) and tabulate their duals from Hermite series
///                 (a few batch calls per layer); detected by is_batch_only.
/// Not public API beyond the two traits.

#include <algorithm>
#include <cstddef>
#include <exception>
#include <type_traits>
#include <vector>

#include "../activations.hpp"

namespace ntk {

/// Compile-time test for the batch member `phi.values_and_derivatives(z, v, dv, n)`.
template <class Phi, class Scalar, class = void>
struct has_batch_values : std::false_type {};
template <class Phi, class Scalar>
struct has_batch_values<
    Phi, Scalar,
    std::void_t<decltype(std::declval<const Phi&>().values_and_derivatives(
        std::declval<const Scalar*>(), std::declval<Scalar*>(), std::declval<Scalar*>(), std::size_t()))>>
    : std::true_type {};
template <class Phi, class Scalar>
inline constexpr bool has_batch_values_v = has_batch_values<Phi, Scalar>::value;

/// Compile-time test for `Phi::batch_only == true` (see the file comment).
template <class Phi, class = void>
struct is_batch_only : std::false_type {};
template <class Phi>
struct is_batch_only<Phi, std::enable_if_t<Phi::batch_only>> : std::true_type {};
template <class Phi>
inline constexpr bool is_batch_only_v = is_batch_only<Phi>::value;

namespace detail {

/// Points per batch call in the setup paths (bounds the temporary arrays at a few tens of MB).
inline constexpr std::size_t batch_points = std::size_t(1) << 20;

/// v[i] = φ(z[i]), dv[i] = φ'(z[i]) for i < n (v or dv may be null): one batch call when the type
/// has the member, else point by point (value_and_derivative() where the type shares work).
template <class Phi, class S>
void values_and_derivatives(const Phi& phi, const S* z, S* v, S* dv, std::size_t n) {
  if constexpr (has_batch_values_v<Phi, S>) {
    if (n > 0) phi.values_and_derivatives(z, v, dv, n);
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      if (v && dv) {
        if constexpr (has_value_and_derivative<Phi, S>::value) {
          const auto both = phi.value_and_derivative(z[i]);
          v[i] = both.first;
          dv[i] = both.second;
          continue;
        }
      }
      if (v) v[i] = phi.value(z[i]);
      if (dv) dv[i] = phi.derivative(z[i]);
    }
  }
}

/// Evaluates φ and φ' on `count` points produced in order by fill(first, last, z) (z[0, last -
/// first) receives points first..last-1), in batches of at most batch_points, and hands each
/// batch to use(first, last, v, dv).  One batch call per batch for batch types.
template <class Phi, class S, class Fill, class Use>
void evaluate_in_batches(const Phi& phi, std::size_t count, Fill&& fill, Use&& use) {
  const std::size_t size = std::min(count, batch_points);
  std::vector<S> z(size), v(size), dv(size);
  for (std::size_t first = 0; first < count; first += size) {
    const std::size_t last = std::min(count, first + size);
    fill(first, last, z.data());
    values_and_derivatives(phi, z.data(), v.data(), dv.data(), last - first);
    use(first, last, v.data(), dv.data());
  }
}

/// φ elementwise on a plain matrix h: one batch call for batch types, else a lazy expression.
template <class Phi, class Matrix>
auto activation_values(const Phi& phi, const Matrix& h) {
  using S = typename Matrix::Scalar;
  if constexpr (has_batch_values_v<Phi, S>) {
    Matrix out(h.rows(), h.cols());
    values_and_derivatives(phi, h.data(), out.data(), static_cast<S*>(nullptr), static_cast<std::size_t>(h.size()));
    return out;
  } else {
    return h.unaryExpr([&phi](S v) { return static_cast<S>(phi.value(v)); });
  }
}

/// φ' elementwise on a plain matrix h, likewise.
template <class Phi, class Matrix>
auto activation_derivatives(const Phi& phi, const Matrix& h) {
  using S = typename Matrix::Scalar;
  if constexpr (has_batch_values_v<Phi, S>) {
    Matrix out(h.rows(), h.cols());
    values_and_derivatives(phi, h.data(), static_cast<S*>(nullptr), out.data(), static_cast<std::size_t>(h.size()));
    return out;
  } else {
    return h.unaryExpr([&phi](S v) { return static_cast<S>(phi.derivative(v)); });
  }
}

/// The first exception thrown inside an OpenMP loop, rethrown after it (an exception must not
/// leave a parallel region: the runtime would terminate the program).
class ParallelExceptions {
 public:
  template <class F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(ntk_parallel_exceptions)
#endif
      if (!m_first) m_first = std::current_exception();
    }
  }
  void rethrow() const {
    if (m_first) std::rethrow_exception(m_first);
  }

 private:
  std::exception_ptr m_first;
};

}  // namespace detail
}  // namespace ntk
