#pragma once
// The subcommands of the ntk tool.  Each add_* declares one subcommand on `app`: its options (one
// Options block) and the function that runs it after parsing.
#include <CLI/CLI.hpp>

namespace ntk_cli {
void add_kernel(CLI::App& app);
void add_empirical(CLI::App& app);
void add_constants(CLI::App& app);
void add_predict(CLI::App& app);
void add_classify(CLI::App& app);
void add_demo(CLI::App& app);
}  // namespace ntk_cli
