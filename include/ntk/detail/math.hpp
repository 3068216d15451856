#pragma once
// Branch-free elementary functions the kernel loops can vectorize.  Not public API.

#include <array>
#include <cmath>
#include <cstddef>
#include <utility>

#if defined(__GNUC__) || defined(__clang__)
#define NTK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define NTK_ALWAYS_INLINE inline
#endif

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
  ((p0 = p0 * x4 + c[N - 4 - 4 * Ks], p1 = p1 * x4 + c[N - 3 - 4 * Ks],
    p2 = p2 * x4 + c[N - 2 - 4 * Ks], p3 = p3 * x4 + c[N - 1 - 4 * Ks]),
   ...);
  return (p0 + x * p1) + x2 * (p2 + x * p3);
}

/// acos(x) for x in [-1, 1] to within a few ulp, without branches: for |x| <= 1/2,
/// acos = π/2 - asin(x); above, acos(|x|) = 2 asin(sqrt((1 - |x|)/2)), and asin on [0, 1/2] is a
/// 28-term Taylor polynomial (truncation error < 1e-19).
template <class Scalar>
NTK_ALWAYS_INLINE Scalar acos_accurate(Scalar x) {
  static constexpr auto c = asin_series<Scalar, 28>();
  constexpr Scalar half_pi = static_cast<Scalar>(1.570796326794896619231321691639751442L);
  const Scalar a = std::fabs(x);
  const bool small = a <= Scalar(0.5);
  const Scalar y = small ? a : std::sqrt((1 - a) / 2);
  const Scalar y2 = y * y;
  const Scalar p = y * horner(y2, c, std::make_index_sequence<7>{});  // asin(y)
  const Scalar r = small ? half_pi - p : 2 * p;  // acos(|x|)
  return x >= 0 ? r : 2 * half_pi - r;
}

}  // namespace detail
}  // namespace ntk
