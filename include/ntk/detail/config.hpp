#pragma once
/// \file detail/config.hpp
/// Compiler attributes used by ntk's hot loops, in one place (as Eigen's Macros.h).  Not public API.
///  - NTK_ALWAYS_INLINE: inline and always inlined (small branch-free helpers in vectorized loops);
///  - NTK_NOINLINE: never inlined (keeps a rarely taken path out of a loop the compiler should
///    keep in registers);
///  - NTK_FLATTEN: inline every call inside the function (fixed-size Eigen accumulators then stay
///    in registers whatever the caller's inlining budget).
/// Other compilers get plain `inline` and no attributes.
///
/// -ffast-math (__FAST_MATH__) lets the compiler assume no NaN or infinity exists, which deletes
/// every finiteness check ntk makes (std::isfinite folds to true): bad input would come back as
/// silent NaN.  It is refused; define NTK_ALLOW_FAST_MATH to build anyway, accepting that
/// docs/preconditions.md's domain_error and overflow_error guarantees no longer hold.

#if defined(__FAST_MATH__) && !defined(NTK_ALLOW_FAST_MATH)
#error \
    "ntk: -ffast-math removes ntk's NaN and overflow checks (std::isfinite is assumed true); build without it, or define NTK_ALLOW_FAST_MATH to accept unchecked results"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define NTK_ALWAYS_INLINE inline __attribute__((always_inline))
#define NTK_NOINLINE __attribute__((noinline))
#define NTK_FLATTEN __attribute__((flatten))
#else
#define NTK_ALWAYS_INLINE inline
#define NTK_NOINLINE
#define NTK_FLATTEN
#endif
