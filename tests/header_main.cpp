// Each generated translation unit includes exactly one header (public or detail/).  This one checks
// that the argument checks stay out of the public namespace: a variable may not share its name with
// a function of the same namespace, so this file stops compiling if any of them moves back into ntk.
#include <ntk/ntk.hpp>

namespace ntk {
#define NTK_NOT_PUBLIC(name) [[maybe_unused]] inline constexpr int name = 0;
NTK_NOT_PUBLIC(check_result_finite)
NTK_NOT_PUBLIC(check_finite)
NTK_NOT_PUBLIC(check_finite_scalar)
NTK_NOT_PUBLIC(check_positive)
NTK_NOT_PUBLIC(check_nonnegative)
NTK_NOT_PUBLIC(check_at_least)
NTK_NOT_PUBLIC(check_nonempty)
NTK_NOT_PUBLIC(check_rows)
NTK_NOT_PUBLIC(check_cols)
NTK_NOT_PUBLIC(check_symmetric)
NTK_NOT_PUBLIC(check_threads)
NTK_NOT_PUBLIC(check_request)
NTK_NOT_PUBLIC(check_inputs)
NTK_NOT_PUBLIC(check_allocation)
NTK_NOT_PUBLIC(check_architecture)
NTK_NOT_PUBLIC(check_images)
NTK_NOT_PUBLIC(check_classification)
NTK_NOT_PUBLIC(check_activation_parameters)
NTK_NOT_PUBLIC(check_activation_contract)
NTK_NOT_PUBLIC(check_architecture_contract)
NTK_NOT_PUBLIC(fail)
#undef NTK_NOT_PUBLIC
}  // namespace ntk

int main() {
  return 0;
}
