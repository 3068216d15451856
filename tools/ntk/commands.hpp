#pragma once
#include <string>
#include <vector>

namespace ntk_cli {
using Words = std::vector<std::string>;
int run_kernel(const Words& words);
int run_empirical(const Words& words);
int run_constants(const Words& words);
int run_predict(const Words& words);
int run_classify(const Words& words);
int run_demo(const Words& words);
}  // namespace ntk_cli
