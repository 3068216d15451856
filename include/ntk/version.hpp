#pragma once
/// \file version.hpp
/// Library version; CMake reads these three lines to set the package version.

#define NTK_VERSION_MAJOR 0
#define NTK_VERSION_MINOR 1
#define NTK_VERSION_PATCH 0

namespace ntk {
/// The version as "MAJOR.MINOR.PATCH".
inline constexpr const char* version_string = "0.1.0";
}  // namespace ntk
