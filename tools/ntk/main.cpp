// ntk: the command-line tool over CSV and .npy files.  Errors print one line
// "ntk: error: ..." and exit with status 2; so does output lost on a full or closed stdout.
#include <ntk/version.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <new>

#include "commands.hpp"
#include "io.hpp"

namespace {

const char* footer = R"(
architecture options (every command but demo): --activation NAME (relu), --depth L (3 hidden
  layers), --sigma-w S (1), --sigma-b S (1), --quadrature Q (force quadrature of order Q),
  --threads T (0: all processors)
activations: relu, leaky_relu:SLOPE, abs, erf, tanh, sigmoid, gelu, identity, sin, cos, softplus,
  hermite:c0,c1,..., opt:D
image architectures (kernel, predict): --architecture SPEC --shape H,W,C (rows are images, channels
  last), e.g. --architecture conv:3x3:64,relu,avgpool:2,conv:3x3:64,relu,gap,dense --shape 28,28,1;
  SPEC layers: conv[:FxF][:C][:same|valid|circular][:stride=S][:sw=W][:sb=B][:param=standard],
  avgpool[:N][:stride=S], gap, flatten, dense[:WIDTH][:sw=W][:sb=B][:param=standard], layernorm[:eps=E],
  res[:A](LAYER,...) (y = x + A f(x)),
  and activations (parameters ':'-separated); the SPEC sets every layer, so --activation, --depth,
  --sigma-w and --sigma-b do not apply beside it
Rows are samples.  In TRAIN/TEST files the last K columns are targets (classify: last column labels).
Files ending in .npy are NumPy arrays, anything else CSV; - is stdin.  An option given twice is an
error.  Run ntk COMMAND --help for a command's options.
)";

/// "ntk: error: ..." for a CLI11 parse error, in the tool's wording where CLI11's differs.
std::string parse_message(const CLI::ParseError& e) {
  const std::string what = e.what();
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e)) {  // "--depth: 1 required INT missing" and kin
    const auto colon = what.find(':');
    const auto space = what.find(' ');
    const std::string name = what.substr(0, std::min(colon, space));
    if (name.rfind("--", 0) == 0) return "option " + name + " needs a value";
  }
  return what;
}

}  // namespace

// Built with NTK_MPI the real main is tools/ntk/mpi_main.cpp, which calls this on every rank.
#if defined(NTK_CLI_MPI)
#define NTK_CLI_MAIN ntk_cli_tool_main
#include "mpi_main.hpp"
#else
#define NTK_CLI_MAIN main
#endif

int NTK_CLI_MAIN(int argc, char** argv) {
  CLI::App app(
      "ntk " + std::string(ntk::version_string) + " - Neural Tangent Kernel tool (CSV or .npy in, CSV or .npy out)",
      "ntk");
  app.get_formatter()->label("Usage", "usage");
  app.footer(footer);
  app.set_version_flag("--version", "ntk " + std::string(ntk::version_string));
  app.require_subcommand(0, 1);
  app.allow_extras();
  ntk_cli::add_kernel(app);
  ntk_cli::add_empirical(app);
  ntk_cli::add_constants(app);
  ntk_cli::add_predict(app);
  ntk_cli::add_classify(app);
  ntk_cli::add_demo(app);
  for (CLI::App* sub : app.get_subcommands({})) sub->allow_extras();
  int status = 0;
  try {
    app.parse(argc, argv);  // runs the chosen subcommand
    if (app.get_subcommands().empty()) {
      const auto rest = app.remaining();
      if (!rest.empty()) throw ntk_cli::CliError("unknown command '" + rest.front() + "' (see ntk --help)");
      std::cout << app.help();
      status = 2;
    }
  } catch (const CLI::CallForHelp&) {
    std::cout << (app.get_subcommands().empty() ? app.help() : app.get_subcommands().front()->help());
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
  } catch (const CLI::ParseError& e) {
    std::cerr << "ntk: error: " << parse_message(e) << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << "ntk: error: out of memory\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ntk: error: " << e.what() << "\n";
    return 2;
  }
  try {
    ntk_cli::finish_stdout();
  } catch (const std::exception& e) {
    std::cerr << "ntk: error: " << e.what() << "\n";
    return 2;
  }
  return status;
}
