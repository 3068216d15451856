#pragma once
// Branch-free elementary functions the kernel loops can vectorize.  Not public API.

#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <utility>

#include "config.hpp"

namespace ntk {
namespace detail {

/// Taylor coefficients of asin(y)/y in y²: c_k = (2k)! / (4^k (k!)² (2k + 1)).
template <class Scalar, std::size_t N>
constexpr std::array<Scalar, N> asin_series() {
  std::array<Scalar, N> c{};
  long double central = 1;  // (2k)! / (4^k (k!)^2)
  for (std::size_t k = 0; k < N; ++k) {
    c[k] = static_cast<Scalar>(central / static_cast<long double>(2 * k + 1));
    central *= static_cast<long double>(2 * k + 1) / static_cast<long double>(2 * k + 2);
  }
  return c;
}

/// Σ_k c[k] x^k for N divisible by 4, as four interleaved Horner chains in x⁴ (a quarter of the
/// latency of one chain, which matters in scalar loops), unrolled at compile time.
template <class Scalar, std::size_t N, std::size_t... Ks>
NTK_ALWAYS_INLINE Scalar horner(Scalar x, const std::array<Scalar, N>& c, std::index_sequence<Ks...>) {
  static_assert(N % 4 == 0 && sizeof...(Ks) == N / 4, "horner: N must be a multiple of 4");
  const Scalar x2 = x * x, x4 = x2 * x2;
  Scalar p0 = 0, p1 = 0, p2 = 0, p3 = 0;
  ((p0 = p0 * x4 + c[N - 4 - 4 * Ks], p1 = p1 * x4 + c[N - 3 - 4 * Ks], p2 = p2 * x4 + c[N - 2 - 4 * Ks],
    p3 = p3 * x4 + c[N - 1 - 4 * Ks]),
   ...);
  return (p0 + x * p1) + x2 * (p2 + x * p3);
}

/// acos(x) for x in [-1, 1] to within a few ulp, without branches: for |x| <= 1/2,
/// acos = π/2 - asin(x); above, acos(|x|) = 2 asin(sqrt((1 - |x|)/2)), and asin on [0, 1/2] is a
/// 28-term Taylor polynomial (truncation error < 1e-19, enough for long double).
template <class Scalar>
NTK_ALWAYS_INLINE Scalar acos_accurate(Scalar x) {
  static constexpr auto c = asin_series<Scalar, 28>();
  constexpr Scalar half_pi = static_cast<Scalar>(1.570796326794896619231321691639751442L);
  const Scalar a = std::fabs(x);
  const bool small = a <= Scalar(0.5);
  const Scalar y = small ? a : std::sqrt((1 - a) / 2);
  const Scalar y2 = y * y;
  const Scalar p = y * horner(y2, c, std::make_index_sequence<7>{});  // asin(y)
  const Scalar r = small ? half_pi - p : 2 * p;                       // acos(|x|)
  return x >= 0 ? r : 2 * half_pi - r;
}

/// asin(y)/y as a polynomial in z = y² on [0, 1/2] (|y| <= 1/√2): degree 19, interpolated at
/// Chebyshev points, relative error 8e-18 with these double coefficients (scripts/fit_asin.py).
inline constexpr std::array<double, 20> asin_over_y_coefficients{
    1.00000000000000000e+00,  1.66666666666669627e-01, 7.49999999992160271e-02,  4.46428572251978337e-02,
    3.03819398816733942e-02,  2.23723131724858047e-02, 1.73493103271581961e-02,  1.40191720400696593e-02,
    1.09293490649123703e-02,  1.50917950285833647e-02, -2.63163245523388260e-02, 1.80957462091106497e-01,
    -6.64123630254941144e-01, 2.00160411092915469e+00, -4.53579180282295535e+00, 7.76816537455500811e+00,
    -9.66965939855062295e+00, 8.32498352944691078e+00, -4.43881669206693896e+00, 1.12641928788075085e+00};

/// θ = acos(x) and sin θ = sqrt(1 - x²) for x in [-1, 1], branch-free, with one square root:
/// below |x| = 1/√2, acos|x| = π/2 - asin|x|; above, acos|x| = asin(sin θ).  Both arguments of asin
/// stay in [0, 1/√2], where the polynomial above is accurate to double rounding.  Types with more
/// than double's precision take acos_accurate and a second square root.
template <class Scalar>
NTK_ALWAYS_INLINE void acos_and_sine(Scalar x, Scalar& theta, Scalar& sine) {
  sine = std::sqrt((1 - x) * (1 + x));
  if constexpr (std::numeric_limits<Scalar>::digits > 53) {
    theta = acos_accurate(x);
  } else {
    static constexpr auto c = [] {
      std::array<Scalar, 20> cast{};
      for (std::size_t k = 0; k < cast.size(); ++k) cast[k] = static_cast<Scalar>(asin_over_y_coefficients[k]);
      return cast;
    }();
    constexpr Scalar half_pi = static_cast<Scalar>(1.570796326794896619231321691639751442L);
    const Scalar a = std::fabs(x);
    const bool small = a <= Scalar(0.70710678118654752440L);
    const Scalar y = small ? a : sine;
    const Scalar p = y * horner(y * y, c, std::make_index_sequence<5>{});  // asin(y)
    const Scalar r = small ? half_pi - p : p;                              // acos(|x|)
    theta = x >= 0 ? r : 2 * half_pi - r;
  }
}

}  // namespace detail
}  // namespace ntk
