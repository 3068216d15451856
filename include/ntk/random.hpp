#pragma once
/// \file random.hpp
/// A seeded normal generator whose uniform stream is identical on every platform and standard
/// library: xoshiro256** seeded through SplitMix64, uniforms from the top 53 bits, normals by the
/// Box–Muller transform.  (std::normal_distribution is implementation-defined and is not used.)
/// Normals go through std::log, std::sqrt and std::cos, so libraries whose log/cos are not
/// correctly rounded may differ in the last bit.

#include <Eigen/Core>

#include <cmath>
#include <cstdint>

namespace ntk {

/// Reproducible N(0, 1) samples from a 64-bit seed.
class NormalGenerator {
 public:
  explicit NormalGenerator(std::uint64_t seed) {
    for (auto& word : m_state) word = splitmix(seed);
  }

  /// The next raw 64-bit output (xoshiro256**).
  std::uint64_t next_u64() {
    const std::uint64_t result = rotl(m_state[1] * 5, 7) * 9;
    const std::uint64_t t = m_state[1] << 17;
    m_state[2] ^= m_state[0];
    m_state[3] ^= m_state[1];
    m_state[1] ^= m_state[2];
    m_state[0] ^= m_state[3];
    m_state[2] ^= t;
    m_state[3] = rotl(m_state[3], 45);
    return result;
  }

  /// Uniform on (0, 1), never exactly 0.
  double uniform() { return (static_cast<double>(next_u64() >> 11) + 0.5) * 0x1.0p-53; }

  /// A standard normal sample.
  double normal() {
    if (m_has_spare) {
      m_has_spare = false;
      return m_spare;
    }
    const double radius = std::sqrt(-2 * std::log(uniform()));
    const double angle = 6.283185307179586476925286766559 * uniform();
    m_spare = radius * std::sin(angle);
    m_has_spare = true;
    return radius * std::cos(angle);
  }

  /// A seed derived from (seed, index), for independent streams such as Monte Carlo draws.
  static std::uint64_t derive(std::uint64_t seed, std::uint64_t index) {
    std::uint64_t s = seed ^ (0x9E3779B97F4A7C15ULL * (index + 1));
    return splitmix(s);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  std::uint64_t m_state[4];
  double m_spare = 0;
  bool m_has_spare = false;
};

/// A rows x cols matrix of N(0, 1) draws from NormalGenerator(seed), filled row by row (so the
/// first rows of a larger matrix are the same draws).
inline Eigen::MatrixXd normal_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  NormalGenerator g(seed);
  Eigen::MatrixXd x(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j) x(i, j) = g.normal();
  return x;
}

}  // namespace ntk
