// ntk: the command-line tool over CSV and .npy files.  Errors print one line
// "ntk: error: ..." and exit with status 2.
#include <ntk/version.hpp>

#include <exception>
#include <iostream>
#include <new>

#include "commands.hpp"
#include "io.hpp"

namespace {

const char* usage = R"(ntk — Neural Tangent Kernel tool (CSV or .npy in, CSV or .npy out)

usage: ntk <command> [options]

commands:
  kernel     --x A.csv [--x2 B.csv] [--kind ntk|nngp] [--out K.csv]   analytic Gram matrix
  empirical  --x A.csv [--x2 B.csv] --width M [--seed S] [--outputs K]  empirical NTK of a random network
  constants  --activation NAME                                          A, A', B, alpha, regime
  predict    --train TRAIN.csv --test TEST.csv [--outputs K] [--kernel ntk|nngp] [--lr ETA]
             [--time T[,T2,...]|inf] [--discrete] [--diag-reg R] [--variance] [--out P.csv]
  classify   --train TRAIN.csv --test TEST.csv [--kernel ntk|nngp] [--out L.csv]   deep-limit classifier
  demo       [--data FILE.csv] [--out-dir DIR] [--quick]                 the flagship demo

architecture options (every command): --activation NAME (relu) --depth L (3 hidden layers)
  --sigma-w S (1) --sigma-b S (1) --quadrature Q (force quadrature of order Q) --threads T (all)
activations: relu, leaky_relu:SLOPE, abs, erf, tanh, sigmoid, gelu, identity, sin, cos, softplus,
  hermite:c0,c1,..., opt:D
image architectures (kernel, predict): --architecture SPEC --shape H,W,C (rows are images, channels
  last), e.g. --architecture conv:3x3:64,relu,avgpool:2,conv:3x3:64,relu,gap,dense --shape 28,28,1;
  SPEC layers: conv[:FxF][:C][:same|valid|circular][:stride=S][:sw=W][:sb=B], avgpool[:N][:stride=S],
  gap, flatten, dense[:WIDTH][:sw=W][:sb=B], and activations (parameters ':'-separated)
Rows are samples.  In TRAIN/TEST files the last K columns are targets (classify: last column labels).
--help, --version
)";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> words(argv + 1, argv + argc);
  try {
    if (words.empty() || words[0] == "--help" || words[0] == "-h" || words[0] == "help") {
      std::cout << usage;
      return words.empty() ? 2 : 0;
    }
    if (words[0] == "--version") {
      std::cout << "ntk " << ntk::version_string << "\n";
      return 0;
    }
    const std::string command = words[0];
    const ntk_cli::Words rest(words.begin() + 1, words.end());
    for (const auto& w : rest)
      if (w == "--help") {
        std::cout << usage;
        return 0;
      }
    if (command == "kernel") return ntk_cli::run_kernel(rest);
    if (command == "empirical") return ntk_cli::run_empirical(rest);
    if (command == "constants") return ntk_cli::run_constants(rest);
    if (command == "predict") return ntk_cli::run_predict(rest);
    if (command == "classify") return ntk_cli::run_classify(rest);
    if (command == "demo") return ntk_cli::run_demo(rest);
    throw ntk_cli::CliError("unknown command '" + command + "' (see ntk --help)");
  } catch (const std::bad_alloc&) {
    std::cerr << "ntk: error: out of memory\n";
  } catch (const std::exception& e) {
    std::cerr << "ntk: error: " << e.what() << "\n";
  }
  return 2;
}
