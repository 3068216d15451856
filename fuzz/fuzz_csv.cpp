// The CLI's CSV and .npy readers on arbitrary bytes: a matrix of finite values or a CliError.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include "../tools/ntk/io.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  for (int format = 0; format < 2; ++format) {
    std::istringstream in(bytes);
    try {
      const Eigen::MatrixXd m = format == 0 ? ntk_cli::parse_csv(in, "fuzz") : ntk_cli::parse_npy(in, "fuzz");
      if (m.size() == 0 || !m.allFinite()) std::abort();
    } catch (const ntk_cli::CliError&) {
    }
  }
  return 0;
}
