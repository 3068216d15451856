// Must NOT compile: the activation lacks derivative(); the static_assert names the member.
#include <ntk/kernel.hpp>

struct NoDerivative {
  template <class S>
  S value(S z) const {
    return z;
  }
};

int main() {
  const Eigen::MatrixXd x = Eigen::MatrixXd::Identity(2, 2);
  return static_cast<int>(ntk::ntk_kernel(ntk::mlp(NoDerivative{}, 1), x)(0, 0));
}
