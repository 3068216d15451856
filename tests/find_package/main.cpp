// A downstream program: the ReLU dual at unit variances and correlation 1/2 is 1/2 * 0.6089977810442294.
#include <ntk/ntk.hpp>

#include <cmath>
#include <cstdio>

int main() {
  const auto d = ntk::dual(ntk::Relu{}, 1.0, 0.5, 1.0);
  std::printf("ntk %s: relu dual at rho = 0.5: %.16f\n", ntk::version_string, d.t);
  return std::fabs(d.t - 0.3044988905221147) < 1e-14 ? 0 : 1;
}
