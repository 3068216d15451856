#pragma once
// Turns fuzzer bytes into numbers and shapes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace ntk_fuzz {

class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : m_data(data), m_size(size) {}
  std::uint8_t byte() { return m_pos < m_size ? m_data[m_pos++] : 0; }
  /// An integer in [lo, hi].
  int integer(int lo, int hi) { return lo + byte() % (hi - lo + 1); }
  /// Any double, NaN and infinities included, when 8 bytes remain; else a small value.
  double raw_double() {
    double v = 0;
    if (m_pos + 8 <= m_size) {
      std::memcpy(&v, m_data + m_pos, 8);
      m_pos += 8;
    }
    return v;
  }
  /// A double that mixes ordinary magnitudes with extremes, from one selector byte.
  double value() {
    switch (byte() % 8) {
      case 0:
        return raw_double();
      case 1:
        return 0.0;
      case 2:
        return (byte() - 128) * 1e-150;
      case 3:
        return (byte() - 128) * 1e140;
      default:
        return (static_cast<int>(byte()) - 128) / 32.0;
    }
  }

 private:
  const std::uint8_t* m_data;
  std::size_t m_size, m_pos = 0;
};

/// Runs `compute`, which returns whether its results are finite: a non-finite result aborts (the
/// fuzzer's failure); the library's documented exceptions are accepted outcomes.
template <class Compute>
void expect_finite_or_documented(Compute&& compute) {
  try {
    if (!compute()) std::abort();
  } catch (const std::invalid_argument&) {
  } catch (const std::domain_error&) {
  } catch (const std::overflow_error&) {
  } catch (const std::length_error&) {  // a size refused before allocating
  }
}

}  // namespace ntk_fuzz
