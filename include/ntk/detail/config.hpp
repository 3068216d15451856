#pragma once
/// \file detail/config.hpp
/// Compiler attributes used by ntk's hot loops, in one place (as Eigen's Macros.h).  Not public API.
///  - NTK_ALWAYS_INLINE: inline and always inlined (small branch-free helpers in vectorized loops);
///  - NTK_NOINLINE: never inlined (keeps a rarely taken path out of a loop the compiler should
///    keep in registers);
///  - NTK_FLATTEN: inline every call inside the function (fixed-size Eigen accumulators then stay
///    in registers whatever the caller's inlining budget).
/// Other compilers get plain `inline` and no attributes.

#if defined(__GNUC__) || defined(__clang__)
#define NTK_ALWAYS_INLINE inline __attribute__((always_inline))
#define NTK_NOINLINE __attribute__((noinline))
#define NTK_FLATTEN __attribute__((flatten))
#else
#define NTK_ALWAYS_INLINE inline
#define NTK_NOINLINE
#define NTK_FLATTEN
#endif
