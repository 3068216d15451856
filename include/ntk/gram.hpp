#pragma once
/// \file gram.hpp
/// Gram operators: symmetric positive semi-definite n x n kernels G0 = Θ(X, X) or Σ(X, X) that the
/// solvers of solvers.hpp (and the distributed operator of the MPI layer) use through one concept,
/// in the style of Spectra's MatOp.  An operator `Op` provides
///
///     using Scalar = ...;                                   // double (or float)
///     Eigen::Index rows() const;                            // n
///     void apply(const Eigen::Ref<const Matrix>& v,         // out = G0 v for an n x k block,
///                Eigen::Ref<Matrix> out) const;             //   all k columns in one pass
///     Vector diagonal() const;                              // diag(G0), n
///     void columns(const std::vector<Eigen::Index>& idx,    // out = G0(:, idx), n x |idx|
///                  Eigen::Ref<Matrix> out) const;
///
/// with Matrix = Eigen::Matrix<Scalar, Dynamic, Dynamic> (column-major), Vector its column, and
/// `out` never aliasing `v`.  `is_gram_operator_v<Op>` tests it; every solver static_asserts it.
/// Implementations here:
///   - DenseGram: a view of an n x n matrix the caller owns (n² storage);
///   - PackedGram: one triangle stored once (≈ n²/2 entries, float64 or float32), in memory or in a
///     memory-mapped file, filled by tiles with the kernel engine; K·V blocked and threaded;
///   - MatrixFreeGram: recomputes the kernel by tiles in every apply (O(n · block) memory).
///   - GramRef: a type-erased view of any of them (one compiled solver per Scalar).
/// Data matrices hold one sample per row (n x d).

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#endif

#include "detail/mapped_file.hpp"
#include "detail/memory.hpp"
#include "errors.hpp"
#include "kernel.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ntk {

namespace detail {

template <class Op, class = void>
struct gram_operator_check : std::false_type {};

template <class Op>
struct gram_operator_check<
    Op,
    std::void_t<
        typename Op::Scalar,
        decltype(std::declval<const Op&>().apply(
            std::declval<const Eigen::Ref<const Eigen::Matrix<typename Op::Scalar, Eigen::Dynamic, Eigen::Dynamic>>&>(),
            std::declval<Eigen::Ref<Eigen::Matrix<typename Op::Scalar, Eigen::Dynamic, Eigen::Dynamic>>>())),
        decltype(std::declval<const Op&>().columns(
            std::declval<const std::vector<Eigen::Index>&>(),
            std::declval<Eigen::Ref<Eigen::Matrix<typename Op::Scalar, Eigen::Dynamic, Eigen::Dynamic>>>()))>>
    : std::bool_constant<std::is_convertible_v<decltype(std::declval<const Op&>().rows()), Eigen::Index> &&
                         std::is_convertible_v<decltype(std::declval<const Op&>().diagonal()),
                                               Eigen::Matrix<typename Op::Scalar, Eigen::Dynamic, 1>>> {};

}  // namespace detail

/// True when Op models the Gram operator concept described in this file's header.
template <class Op>
inline constexpr bool is_gram_operator_v = detail::gram_operator_check<Op>::value;

namespace detail {

template <class Op>
constexpr void require_gram_operator() {
  static_assert(is_gram_operator_v<Op>,
                "ntk: the operator must model the Gram operator concept (gram.hpp): a Scalar type, "
                "rows(), apply(Ref<const Matrix> v, Ref<Matrix> out) computing out = G v, "
                "diagonal() and columns(std::vector<Index>, Ref<Matrix>)");
}

inline int thread_count(int threads) {
#if defined(_OPENMP)
  return threads > 0 ? threads : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

inline int thread_id() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// Asks for the cache line holding p (a hint; nothing without GCC/Clang builtins): into every
/// cache level with Locality 3 (prefetcht0 on x86), into L2 and beyond with 2 (prefetcht1).
template <int Locality = 3>
inline void prefetch_line(const char* p) {
  static_assert(Locality >= 0 && Locality <= 3, "prefetch locality is 0 .. 3");
#if defined(__GNUC__)
  __builtin_prefetch(p, 0, Locality);
#else
  (void)p;
#endif
}

/// How accumulate_block_column_tiled brings in the next column group while it computes this one.
enum class NextGroup {
  hardware,   ///< not in software: the chunks are long runs the hardware prefetcher follows
  l1_bursts,  ///< into L1: whole column pieces spread over the passes, and (KB > 1) two row by row
  l2_rows,    ///< into L2 (prefetcht1), row by row only: columns p and p + passes in pass p
};

/// The register-blocked micro-kernel of accumulate_block_column, for G stored columns j (G ≥ 1),
/// KB right-hand sides and `rows` consecutive rows i of one chunk (R(i, j) at r[i + j·ld]):
///     acc_row(i, q) += Σ_j R(i, j) v_col(j, q)            (the "axpy" part, the stored triangle)
///     dots(j, q)    += Σ_i R(i, j) v_row(i, q)            (the "dot" part, its mirror; if Dot)
/// One step handles M packets of rows: its M·G packets of R are loaded once and used 2·KB times
/// from registers; the G·KB broadcasts of v_col and the G·KB dot products (one packet of partial
/// sums each) stay in registers over all rows (G = 6, KB = 2: 24 FMAs per 10 loads and 2 stores,
/// 30 of the 32 AVX-512 registers).  The dot products are not reduced across lanes here: each is
/// added to its packet of partial sums at dots + (j + q·sd)·P, reduced once per block column.
/// Unless Fetch is NextGroup::hardware, each step also prefetches the bytes at prefetch +
/// i·prefetch_step and prefetch_ld further (rows of the columns read next; see
/// accumulate_block_column_tiled), into L2 with NextGroup::l2_rows, else into L1: both must be
/// addresses inside the stored block column.  v/acc are column-major with strides sv/sa.
template <class Scalar, int G, int KB, int M, bool Dot, NextGroup Fetch>
void gram_micro_kernel(const Scalar* r, Eigen::Index ld, Eigen::Index rows, const Scalar* v_row, const Scalar* v_col,
                       Eigen::Index sv, Scalar* acc_row, Eigen::Index sa, Scalar* dots, Eigen::Index sd,
                       const char* prefetch, Eigen::Index prefetch_step, Eigen::Index prefetch_ld) {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  constexpr Eigen::Index P = Eigen::internal::packet_traits<Scalar>::size;
  using Eigen::internal::pmadd;
  Packet b[std::size_t{G}][std::size_t{KB}];  // v_col(g, q) in every lane
  Packet dot[std::size_t{G}][std::size_t{KB}];
  for (int g = 0; g < G; ++g)
    for (int q = 0; q < KB; ++q) {
      b[g][q] = Eigen::internal::pset1<Packet>(v_col[g + q * sv]);
      dot[g][q] = Eigen::internal::pset1<Packet>(Scalar(0));
    }
  // M packets of rows from row i.  (The prefetches depend on nothing but Fetch: a run-time
  // branch here makes GCC keep the dot products in memory.)
  auto rows_step = [&](auto m_tag, Eigen::Index i) {
    constexpr int MM = decltype(m_tag)::value;
    Packet x[std::size_t{MM}][std::size_t{G}];
    for (int m = 0; m < MM; ++m)
      for (int g = 0; g < G; ++g) x[m][g] = Eigen::internal::ploadu<Packet>(r + i + m * P + g * ld);
    if constexpr (Fetch != NextGroup::hardware) {
      constexpr int locality = Fetch == NextGroup::l2_rows ? 2 : 3;
      prefetch_line<locality>(prefetch + i * prefetch_step);
      prefetch_line<locality>(prefetch + i * prefetch_step + prefetch_ld);
    }
    for (int q = 0; q < KB; ++q) {
      for (int m = 0; m < MM; ++m) {
        Scalar* a_ptr = acc_row + i + m * P + q * sa;
        Packet a = Eigen::internal::ploadu<Packet>(a_ptr);
        for (int g = 0; g < G; ++g) a = pmadd(x[m][g], b[g][q], a);
        Eigen::internal::pstoreu(a_ptr, a);
      }
      if constexpr (Dot)
        for (int m = 0; m < MM; ++m) {
          const Packet y = Eigen::internal::ploadu<Packet>(v_row + i + m * P + q * sv);
          for (int g = 0; g < G; ++g) dot[g][q] = pmadd(x[m][g], y, dot[g][q]);
        }
    }
  };
  Eigen::Index i = 0;
  for (; i + M * P <= rows; i += M * P) rows_step(std::integral_constant<int, M>{}, i);
  if constexpr (M > 1)
    for (; i + P <= rows; i += P) rows_step(std::integral_constant<int, 1>{}, i);
  if constexpr (Dot)
    for (int g = 0; g < G; ++g)
      for (int q = 0; q < KB; ++q) {
        Scalar* d = dots + (g + q * sd) * P;
        Eigen::internal::pstoreu(d, Eigen::internal::padd(Eigen::internal::ploadu<Packet>(d), dot[g][q]));
      }
  for (; i < rows; ++i)  // the last rows % P rows, one at a time
    for (int q = 0; q < KB; ++q) {
      Scalar a = acc_row[i + q * sa];
      for (int g = 0; g < G; ++g) {
        a += r[i + g * ld] * v_col[g + q * sv];
        if constexpr (Dot) dots[(g + q * sd) * P] += r[i + g * ld] * v_row[i + q * sv];
      }
      acc_row[i + q * sa] = a;
    }
}

/// gram_micro_kernel with the number of right-hand sides kb (1 .. KB) as a template argument.
template <class Scalar, int G, int KB, int M, bool Dot, NextGroup Fetch, class... Args>
void gram_micro_kernel_kb(int kb, Args... args) {
  if constexpr (KB > 1)
    if (kb < KB) return gram_micro_kernel_kb<Scalar, G, KB - 1, M, Dot, Fetch>(kb, args...);
  gram_micro_kernel<Scalar, G, KB, M, Dot, Fetch>(args...);
}

/// Where the entries R(i, j) of a block column (c1 rows, w columns) lie: in panels of `panel`
/// rows (0: one panel of all c1), each panel column-major with its own height as column stride,
/// one after another.  Panels make every row chunk of the product (at most `panel` rows, not
/// crossing a panel) one contiguous run of memory.
struct BlockLayout {
  Eigen::Index c1, w, panel;

  /// The first row of row i's panel.
  Eigen::Index panel_start(Eigen::Index i) const { return panel > 0 ? i - i % panel : 0; }
  /// The column stride of row i's panel: its height.
  Eigen::Index stride(Eigen::Index i) const { return panel > 0 ? std::min(panel, c1 - panel_start(i)) : c1; }
  /// The offset of R(i, j).
  std::size_t offset(Eigen::Index i, Eigen::Index j) const {
    const Eigen::Index p0 = panel_start(i);
    return static_cast<std::size_t>(p0 * w + j * stride(i) + (i - p0));
  }
};

/// Rows per panel of PackedGram's block columns (BlockLayout): the product's longest row chunks.
inline constexpr Eigen::Index gram_panel_rows = 512;

/// Scratch memory of one thread in PackedGram::apply.
template <class Scalar>
struct GramScratch {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> widened;  // G columns of a float chunk, in Scalar
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> dots;                  // w x k packets of partial sums
};

/// accumulate_block_column with column groups of G, passes of at most KB right-hand sides, steps
/// of M packets of rows and chunks of chunk_rows rows (chunk_rows = 0: whole columns, Storage =
/// Scalar only); Fetch says how the next column group is brought in while this one computes.
template <int G, int KB, int M, Eigen::Index chunk_rows, NextGroup Fetch, class Scalar, class Storage>
void accumulate_block_column_tiled(const Storage* r, const BlockLayout& layout, Eigen::Index c0,
                                   const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& v,
                                   Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> acc,
                                   GramScratch<Scalar>& scratch) {
  constexpr Eigen::Index P = Eigen::internal::packet_traits<Scalar>::size;
  const Eigen::Index c1 = layout.c1, w = layout.w, k = v.cols(), sv = v.outerStride(), sa = acc.outerStride();
  const Eigen::Index passes = (k + KB - 1) / KB;
  constexpr Eigen::Index step = sizeof(Storage);                          // bytes per row
  [[maybe_unused]] const char* begin = reinterpret_cast<const char*>(r);  // the block column's bytes: c1 · w · step
  [[maybe_unused]] const Eigen::Index total_bytes = c1 * w * step;
  static_assert(chunk_rows > 0 || std::is_same_v<Storage, Scalar>, "whole columns need Storage = Scalar");
  // Chunks do not cross panels (whole columns: one panel).
  eigen_assert(layout.panel == 0 || (chunk_rows > 0 && layout.panel % chunk_rows == 0));
  const Eigen::Index height = chunk_rows > 0 ? chunk_rows : c1;  // rows per chunk
  if constexpr (!std::is_same_v<Storage, Scalar>) scratch.widened.resize(chunk_rows, G);
  if (c0 > 0) scratch.dots.setZero(w * k * P);
  Scalar* dots = scratch.dots.data();
  for (Eigen::Index r0 = 0; r0 < c1; r0 += height) {
    const Eigen::Index rows = std::min(height, c1 - r0);
    const Eigen::Index lower = std::max<Eigen::Index>(0, std::min(rows, c0 - r0));  // rows above the diagonal block
    const Storage* first = r + layout.offset(r0, 0);  // the chunk's column 0, columns stored_ld apart
    const Eigen::Index stored_ld = layout.stride(r0), column_bytes = stored_ld * step;
    // Columns j .. j + g - 1 of the chunk, all right-hand sides.
    auto columns = [&](auto g_tag, Eigen::Index j) {
      constexpr int g = decltype(g_tag)::value;
      const char* here = reinterpret_cast<const char*>(first + j * stored_ld);
      // The group read next (its first row, column count and column stride in bytes): the next
      // columns of this chunk, or the first ones of the next chunk when that has as many rows; none
      // at the end.
      const char* next = nullptr;
      Eigen::Index next_columns = 0, next_column_bytes = column_bytes;
      if (j + g < w) {
        next = here + g * column_bytes;
        next_columns = std::min<Eigen::Index>(G, w - j - g);
      } else if (r0 + 2 * height <= c1) {
        next = reinterpret_cast<const char*>(r + layout.offset(r0 + height, 0));
        next_columns = std::min<Eigen::Index>(G, w);
        next_column_bytes = layout.stride(r0 + height) * step;
      }
      // The next group's pieces (rows bytes of each column) lie in this block column.
      eigen_assert(next_columns == 0 ||
                   (next - begin) + (next_columns - 1) * next_column_bytes + rows * step <= total_bytes);
      const Scalar* chunk;
      Eigen::Index ld;
      if constexpr (std::is_same_v<Storage, Scalar>) {
        chunk = first + j * stored_ld;
        ld = stored_ld;
      } else {
        for (int jj = 0; jj < g; ++jj)
          for (Eigen::Index i = 0; i < rows; ++i)
            scratch.widened(i, jj) = static_cast<Scalar>(first[i + (j + jj) * stored_ld]);
        chunk = scratch.widened.data();
        ld = chunk_rows;
      }
      for (Eigen::Index p = 0, q0 = 0; p < passes; ++p) {
        const int kb = static_cast<int>((k - q0) / (passes - p));  // near-equal passes of <= KB
        // The next group is prefetched while this one computes, spread over the passes.  With
        // NextGroup::l1_bursts, before pass p its columns p·c/passes .. (p + 1)·c/passes − 1 whole
        // (c = next_columns); with more than one right-hand side, also (l2_rows: only) columns p
        // and p + passes row by row inside the pass (l1_bursts: both together measured fastest at
        // k = 4 and 10 on 128-row chunks; at k = 1 the first alone; l2_rows covers all G = 6
        // columns from 3 passes on).  Where nothing is to be prefetched the kernel re-touches
        // this group: a no-op.
        if constexpr (Fetch == NextGroup::l1_bursts)
          for (Eigen::Index c = p * next_columns / passes; c < (p + 1) * next_columns / passes; ++c)
            for (Eigen::Index byte = 0; byte < rows * step; byte += 64)
              prefetch_line(next + c * next_column_bytes + byte);
        const bool rowwise = Fetch != NextGroup::hardware && KB > 1 && p < next_columns;
        const char* pf = rowwise ? next + p * next_column_bytes : here;
        const Eigen::Index pf_ld = rowwise && p + passes < next_columns ? passes * next_column_bytes : 0;
        // Every prefetched byte lies in this block column (the kernels prefetch below pf + rows·step
        // and pf_ld further).
        eigen_assert(pf >= begin && (pf - begin) + rows * step + pf_ld <= total_bytes);
        const Scalar* v_col = v.data() + c0 + j + q0 * sv;
        if (lower > 0)
          gram_micro_kernel_kb<Scalar, g, KB, M, true, Fetch>(kb, chunk, ld, lower, v.data() + r0 + q0 * sv, v_col, sv,
                                                              acc.data() + r0 + q0 * sa, sa, dots + (j + q0 * w) * P, w,
                                                              pf, step, pf_ld);
        if (lower < rows)
          gram_micro_kernel_kb<Scalar, g, KB, M, false, Fetch>(kb, chunk + lower, ld, rows - lower, v.data(), v_col, sv,
                                                               acc.data() + r0 + lower + q0 * sa, sa, dots, w,
                                                               pf + lower * step, step, pf_ld);
        q0 += kb;
      }
    };
    Eigen::Index j = 0;
    for (; j + G <= w; j += G) columns(std::integral_constant<int, G>{}, j);
    for (; j < w; ++j) columns(std::integral_constant<int, 1>{}, j);  // the last w % G columns
  }
  if (c0 > 0)  // acc(c0 + j, q) += the P partial sums of dots(j, q)
    for (Eigen::Index q = 0; q < k; ++q)
      for (Eigen::Index j = 0; j < w; ++j) {
        const Scalar* d = dots + (j + q * w) * P;
        Scalar sum = 0;
        for (Eigen::Index l = 0; l < P; ++l) sum += d[l];
        acc(c0 + j, q) += sum;
      }
}

/// acc += the contribution of one stored block column R = G(0:c1, c0:c1) (c1 x w, the diagonal
/// block stored whole, laid out as `layout` says) to G v: acc(0:c1) += R v(c0:c1) and acc(c0:c1) +=
/// R(0:c0)ᵀ v(0:c0) (rows c0:c1 are the diagonal block, stored whole and symmetric: only the first
/// product applies).  layout.panel is 0 (one column-major c1 x w matrix) or a multiple of 512.
/// Blocking: rows go in chunks (the chunk's rows of acc and v stay in L1), each chunk in groups of
/// G columns whose entries are read from memory once and used for both products in
/// gram_micro_kernel; the k right-hand sides go in passes of at most KB, later passes re-reading
/// the G columns from L1, while each pass prefetches part of the next group (with software
/// prefetch); the last w % G columns go one at a time.  Storage other than Scalar (float) is
/// widened G columns at a time.
///
/// Shapes: one right-hand side (memory-bound) G = 4 columns x 2 packets of rows per step, over
/// whole columns for one column-major panel of doubles (four sequential streams the hardware
/// prefetcher follows; acc and v stay in L2 up to n ≈ 30,000: 0.68x -> 0.96x of a plain read of
/// the triangle on Zen 5), in 512-row chunks for panels of doubles and in software-prefetched
/// chunks of 128 rows for float (widened through scratch); more (compute-bound) G = 6 columns x 1
/// packet x 2 right-hand sides in chunks of 128 rows (on Zen 5 the fastest of 128/256/384/512 at
/// k = 10 for float storage and within noise of the best for double; benchmarks/bench_gram.cpp).
///
/// With `long_chunks` (Scalar and Storage double, k ≥ 2) the chunks are 512 rows long: each
/// group's G column pieces of 4 KB are sequential runs the hardware prefetcher follows, and k = 3
/// and 4 go in one pass of G = 4 and 3 columns, so no column is read twice.  On an Intel Ice Lake
/// (n = 20,000, 2 threads, min / median of 6 interleaved rounds, the 8-sum read of the triangle
/// 71-76 ms) this took k = 2 81 / 84 -> 65 / 66 ms, k = 3 88 / 92 -> 73 / 73, k = 4 90 / 93 ->
/// 77 / 85, k = 10 141 / 169 -> 124 / 135 and k = 16 194 / 213 -> 176 / 187, while on Zen 5 long
/// chunks without software prefetch (then 512-4,096 rows in two passes of the 6 x 2 kernel; the
/// one-pass kernels only on prefetched short chunks there) were no better than the prefetched
/// 128-row ones (k = 4 within the noise, k = 10 2-35% slower): long_chunks_pay() picks them
/// everywhere but on AMD.  The choice changes the order of the sums, not their terms.
///
/// For k ≥ 5 (three or more passes over each group) the long chunks also prefetch the next group
/// into L2, row by row during the passes (NextGroup::l2_rows), so that its reads overlap this
/// group's arithmetic: on the same host (6 interleaved rounds, the read 70-77 ms) k = 10 went
/// 127 / 137 -> 114 / 120 ms and k = 16 169 / 183 -> 161 / 171.  In shorter runs of variants the
/// L1 bursts as well made k = 10 slower than no prefetch, and rows into L1 gained less.
///
/// PackedGram stores its block columns in 512-row panels (BlockLayout; not on AMD by default),
/// so that a 512-row chunk is one run of 2 MB (w = 512) instead of 512 runs of 4 KB: on the same
/// host (6 interleaved rounds, the read's minimum 64-66 ms) k = 4 went 73 / 87 -> 62 / 64 ms (at
/// the read), k = 10 102 / 106 -> 97 / 99 and k = 16 142 / 147 -> 136 / 137; k = 1 (512-row
/// chunks instead of whole columns) within the noise or a few per cent slower.  In a mock-up,
/// panels of 128, 256, 384 and 1,024 rows were no faster than 512 at k = 10.
template <class Scalar, class Storage>
void accumulate_block_column(const Storage* r, const BlockLayout& layout, Eigen::Index c0,
                             const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& v,
                             Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> acc,
                             GramScratch<Scalar>& scratch, bool long_chunks) {
  constexpr bool same = std::is_same_v<Storage, Scalar>, all_double = same && std::is_same_v<Scalar, double>;
  const Eigen::Index k = v.cols();
  if (k == 1) {
    if constexpr (same)
      return layout.panel == 0
                 ? accumulate_block_column_tiled<4, 1, 2, 0, NextGroup::hardware>(r, layout, c0, v, acc, scratch)
                 : accumulate_block_column_tiled<4, 1, 2, 512, NextGroup::hardware>(r, layout, c0, v, acc, scratch);
    else
      return accumulate_block_column_tiled<4, 1, 2, 128, NextGroup::l1_bursts>(r, layout, c0, v, acc, scratch);
  }
  if constexpr (all_double)  // (measured with double only)
    if (long_chunks) {
      constexpr auto hardware = NextGroup::hardware;
      if (k == 2) return accumulate_block_column_tiled<6, 2, 1, 512, hardware>(r, layout, c0, v, acc, scratch);
      if (k == 3) return accumulate_block_column_tiled<4, 3, 1, 512, hardware>(r, layout, c0, v, acc, scratch);
      if (k == 4) return accumulate_block_column_tiled<3, 4, 1, 512, hardware>(r, layout, c0, v, acc, scratch);
      return accumulate_block_column_tiled<6, 2, 1, 512, NextGroup::l2_rows>(r, layout, c0, v, acc, scratch);
    }
  accumulate_block_column_tiled<6, 2, 1, 128, NextGroup::l1_bursts>(r, layout, c0, v, acc, scratch);
}

/// The processor's vendor string from cpuid ("GenuineIntel", "AuthenticAMD", ...); empty where
/// it cannot be read (other architectures and compilers).
inline std::string cpu_vendor() {
  unsigned regs[4] = {0, 0, 0, 0};  // eax, ebx, ecx, edx of leaf 0
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  if (!__get_cpuid(0, &regs[0], &regs[1], &regs[2], &regs[3])) return {};
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
  int r[4];
  __cpuid(r, 0);
  for (int i = 0; i < 4; ++i) regs[i] = static_cast<unsigned>(r[i]);
#else
  return {};
#endif
  char vendor[12];
  std::memcpy(vendor, &regs[1], 4);
  std::memcpy(vendor + 4, &regs[3], 4);
  std::memcpy(vendor + 8, &regs[2], 4);
  return std::string(vendor, 12);
}

/// Whether accumulate_block_column's long_chunks pay on this processor: not on AMD (or its Zen
/// licensee Hygon; measured on Zen 5), yes elsewhere (measured on Intel; others unmeasured).
inline bool long_chunks_pay() {
  static const bool pay = [] {
    const std::string vendor = cpu_vendor();
    return vendor != "AuthenticAMD" && vendor != "HygonGenuine";
  }();
  return pay;
}

/// Averages the diagonal w x w block of a tile G(0:c1, c0:c1) with its transpose: tiles come from
/// the rectangular engine, whose two triangles may differ by rounding.
template <class Tile>
void symmetrize_diagonal_block(Tile& tile, Eigen::Index c0, Eigen::Index w) {
  for (Eigen::Index j = 0; j < w; ++j)
    for (Eigen::Index i = 0; i < j; ++i) {
      const auto mean = (tile(c0 + i, j) + tile(c0 + j, i)) / 2;
      tile(c0 + i, j) = mean;
      tile(c0 + j, i) = mean;
    }
}

}  // namespace detail

/// Called after each tile: entries done and total (of the stored triangle).
using GramProgress = std::function<void(double done, double total)>;

/// A view of an n x n symmetric PSD matrix the caller owns (it must outlive the view).  apply is one
/// GEMM (Eigen, threaded in OpenMP builds).
template <class Scalar_ = double>
class DenseGram {
 public:
  using Scalar = Scalar_;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// Throws std::invalid_argument unless g is square and non-empty.
  explicit DenseGram(const Matrix& g) : m_g(g.data(), g.rows(), g.cols()) {
    detail::check_nonempty("DenseGram", "g", g);
    if (g.rows() != g.cols())
      detail::fail<std::invalid_argument>("DenseGram", "g must be square (got ", g.rows(), " x ", g.cols(), ")");
  }
  Eigen::Index rows() const { return m_g.rows(); }
  void apply(const Eigen::Ref<const Matrix>& v, Eigen::Ref<Matrix> out) const { out.noalias() = m_g * v; }
  Vector diagonal() const { return m_g.diagonal(); }
  void columns(const std::vector<Eigen::Index>& idx, Eigen::Ref<Matrix> out) const {
    for (std::size_t c = 0; c < idx.size(); ++c) out.col(static_cast<Eigen::Index>(c)) = m_g.col(idx[c]);
  }
  const Eigen::Map<const Matrix>& matrix() const { return m_g; }

 private:
  Eigen::Map<const Matrix> m_g;
};

/// Options of PackedGram.
struct PackedGramOptions {
  /// Width of the stored block columns (and of the tiles the engine fills); >= 1.
  Eigen::Index block = 512;
  /// Empty: storage in memory.  Otherwise a file created (or truncated) and memory-mapped; the
  /// operating system pages it, so the triangle may exceed free RAM (at disk speed).
  std::string file;
  /// Keep the file after the operator is destroyed (else it is removed).
  bool keep_file = false;
  /// Threads for apply, columns and fill's copy in OpenMP builds; 0 uses the OpenMP default.
  int threads = 0;
  /// Rows per panel of the stored block columns (see PackedGram): a positive multiple of 512, 0
  /// for column-major block columns, or −1: 512, except column-major on AMD (and Hygon)
  /// processors, where the product was tuned on that layout and panels are unmeasured.  Any choice
  /// gives the same entries and products up to the order of the sums.
  Eigen::Index panel = -1;

  void check(const char* function) const {
    detail::check_at_least<Eigen::Index>(function, "block", block, 1);
    detail::check_at_least(function, "threads", threads, 0);
    if (panel < -1 || (panel > 0 && panel % detail::gram_panel_rows != 0))
      detail::fail<std::invalid_argument>(function, "panel", " must be -1, 0 or a positive multiple of ",
                                          detail::gram_panel_rows, " (got ", panel, ")");
  }
};

/// A symmetric n x n Gram matrix with one triangle stored once, in block columns: block J holds
/// G(0:c1, c0:c1) (c0 = J·b, c1 = min(n, c0 + b); the diagonal block whole) in panels of rows
/// (PackedGramOptions::panel), each column-major (detail::BlockLayout): n²/2 + O(n b) entries of
/// type Storage.  Storage float halves the memory; every entry then carries a relative rounding
/// error of 2⁻²⁴ ≈ 6e-8 (products are accumulated in Scalar), so solutions of (G + λI) α = y
/// change by up to about cond(G + λI) · 6e-8 relative (measured in docs/large_scale.md).  apply
/// streams the triangle once per call, all k right-hand sides at once, block columns shared among
/// threads.
template <class Scalar_ = double, class Storage_ = Scalar_>
class PackedGram {
 public:
  using Scalar = Scalar_;
  using Storage = Storage_;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  static_assert(std::is_floating_point_v<Storage>, "ntk::PackedGram: Storage must be float or double");

  /// Entries stored for n points with block width b.
  static std::size_t stored_entries(Eigen::Index n, Eigen::Index block) {
    std::size_t total = 0;
    for (Eigen::Index c0 = 0; c0 < n; c0 += block) {
      const Eigen::Index c1 = std::min(n, c0 + block);
      total += static_cast<std::size_t>(c1) * static_cast<std::size_t>(c1 - c0);
    }
    return total;
  }
  /// Bytes of storage for n points.
  static std::size_t storage_bytes(Eigen::Index n, const PackedGramOptions& options = {}) {
    return stored_entries(n, options.block) * sizeof(Storage);
  }

  /// Storage for n points, not yet filled (fill() or packed_gram() fill it).  Throws
  /// std::invalid_argument for n < 1, bad options or a file that cannot be created or mapped.
  explicit PackedGram(Eigen::Index n, const PackedGramOptions& options = {}) : m_n(n), m_options(options) {
    const char* fn = "PackedGram";
    detail::check_at_least<Eigen::Index>(fn, "n", n, 1);
    options.check(fn);
    if (m_options.panel < 0) m_options.panel = detail::long_chunks_pay() ? detail::gram_panel_rows : 0;
    const Eigen::Index b = options.block;
    std::size_t offset = 0;
    for (Eigen::Index c0 = 0; c0 < n; c0 += b) {
      m_offsets.push_back(offset);
      const Eigen::Index c1 = std::min(n, c0 + b);
      offset += static_cast<std::size_t>(c1) * static_cast<std::size_t>(c1 - c0);
    }
    m_offsets.push_back(offset);
    if (options.file.empty()) {
      m_owned = detail::allocate_aligned<Storage>(offset);
      m_data = m_owned.get();
    } else {
      m_file = detail::MappedFile(fn, options.file, offset * sizeof(Storage), !options.keep_file);
      m_data = static_cast<Storage*>(m_file.data());
    }
  }

  /// Fills the storage block column by block column: tile(c0, c1, out) must write G(0:c1, c0:c1)
  /// (c1 x (c1 − c0)) into out: the storage itself for column-major double storage, else a buffer
  /// of that size copied into the panels.  progress (optional) is called after every tile.
  template <class Tile>
  void fill(Tile&& tile, const GramProgress& progress = {}) {
    const Eigen::Index b = m_options.block;
    const double total = static_cast<double>(m_offsets.back());
    Matrix buffer;
    for (std::size_t J = 0; J + 1 < m_offsets.size(); ++J) {
      const Eigen::Index c0 = static_cast<Eigen::Index>(J) * b, c1 = std::min(m_n, c0 + b), w = c1 - c0;
      if constexpr (std::is_same_v<Storage, Scalar>)
        if (m_options.panel == 0) {
          Eigen::Map<Matrix> stored(m_data + m_offsets[J], c1, w);
          tile(c0, c1, Eigen::Ref<Matrix>(stored));
          detail::symmetrize_diagonal_block(stored, c0, w);
          if (progress) progress(static_cast<double>(m_offsets[J + 1]), total);
          continue;
        }
      buffer.resize(c1, w);
      tile(c0, c1, Eigen::Ref<Matrix>(buffer));
      detail::symmetrize_diagonal_block(buffer, c0, w);
      const detail::BlockLayout layout = this->layout(c0);
      // Column by column over the threads (so is the first touch of the storage's pages).
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(detail::thread_count(m_options.threads))
#endif
      for (Eigen::Index j = 0; j < w; ++j)
        for (Eigen::Index p0 = 0; p0 < c1; p0 += layout.stride(p0))
          Eigen::Map<StorageVector>(m_data + m_offsets[J] + layout.offset(p0, j), layout.stride(p0)) =
              buffer.col(j).segment(p0, layout.stride(p0)).template cast<Storage>();
      if (progress) progress(static_cast<double>(m_offsets[J + 1]), total);
    }
  }

  Eigen::Index rows() const {
    return m_n;
  }

  /// out = G v (n x k), one pass over the stored triangle; O(n² k) flops, O(threads · n k) extra
  /// memory.
  void apply(const Eigen::Ref<const Matrix>& v, Eigen::Ref<Matrix> out) const {
    const Eigen::Index k = v.cols(), b = m_options.block;
    const int threads = detail::thread_count(m_options.threads);
    const Eigen::Index blocks = static_cast<Eigen::Index>(m_offsets.size()) - 1;
    // One n x k accumulator per thread, starting half a page (2 KiB) after v modulo 4 KiB: an
    // accumulator row stored and the same row of v loaded next would otherwise share their low 12
    // address bits, which the CPU treats as a possible dependence ("4K aliasing") and waits on.
    constexpr std::size_t page = 4096;
    const auto accumulator = [&](std::vector<Scalar>& buffer) {
      const std::uintptr_t from = reinterpret_cast<std::uintptr_t>(buffer.data()),
                           to = reinterpret_cast<std::uintptr_t>(v.data()) + page / 2;
      const std::size_t shift = ((to - from) % page) / sizeof(Scalar);
      return Eigen::Map<Matrix>(buffer.data() + shift, m_n, k);
    };
    std::vector<std::vector<Scalar>> partial(static_cast<std::size_t>(threads));
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
      std::vector<Scalar>& buffer = partial[static_cast<std::size_t>(detail::thread_id())];
      buffer.assign(static_cast<std::size_t>(m_n * k) + page / sizeof(Scalar), Scalar(0));
      Eigen::Map<Matrix> acc = accumulator(buffer);
      detail::GramScratch<Scalar> scratch;
      const bool long_chunks = detail::long_chunks_pay();
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
      for (Eigen::Index J = blocks - 1; J >= 0; --J) {  // largest block columns first
        detail::accumulate_block_column<Scalar, Storage>(m_data + m_offsets[static_cast<std::size_t>(J)], layout(J * b),
                                                         J * b, v, acc, scratch, long_chunks);
      }
    }
    out.setZero();
    for (std::vector<Scalar>& buffer : partial)  // (a team smaller than asked for, e.g. nested, leaves some empty)
      if (!buffer.empty()) out += accumulator(buffer);
  }

  /// G(i, j) (either triangle).
  Scalar entry(Eigen::Index i, Eigen::Index j) const {
    if (i > j) std::swap(i, j);
    const Eigen::Index b = m_options.block, J = j / b;
    return static_cast<Scalar>(m_data[m_offsets[static_cast<std::size_t>(J)] + layout(J * b).offset(i, j - J * b)]);
  }
  Vector diagonal() const {
    Vector d(m_n);
    for (Eigen::Index i = 0; i < m_n; ++i) d[i] = entry(i, i);
    return d;
  }
  /// Column j of G: rows 0 .. c1 − 1 are its stored column in block column J = j / b; every later
  /// row i is G(j, i), row j of a later block column.  Those are gathered block column by block
  /// column, each visited once for all requested j together (in ascending order, panel by panel),
  /// instead of entry by entry with an index computation each (1.6x faster for 100 of 60,000
  /// columns on column-major block columns; the panel order kept 512-row panels at the
  /// column-major time, 0.19-0.22 s against 0.17-0.25 for 1,000 of 40,000 columns, where taking
  /// one j at a time across the panels took 0.33-0.40 s).
  void columns(const std::vector<Eigen::Index>& idx, Eigen::Ref<Matrix> out) const {
    const Eigen::Index count = static_cast<Eigen::Index>(idx.size()), b = m_options.block;
    const Eigen::Index blocks = static_cast<Eigen::Index>(m_offsets.size()) - 1;
    eigen_assert(out.rows() == m_n && out.cols() == count);
    eigen_assert(std::all_of(idx.begin(), idx.end(), [&](Eigen::Index j) { return j >= 0 && j < m_n; }));
    std::vector<std::pair<Eigen::Index, Eigen::Index>> sorted;  // (j, its column of out), ascending j
    for (Eigen::Index c = 0; c < count; ++c) sorted.emplace_back(idx[static_cast<std::size_t>(c)], c);
    std::sort(sorted.begin(), sorted.end());
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) num_threads(detail::thread_count(m_options.threads))
#endif
    for (Eigen::Index I = 0; I < blocks; ++I) {
      const Eigen::Index c0 = I * b, c1 = std::min(m_n, c0 + b);
      const Storage* stored = m_data + m_offsets[static_cast<std::size_t>(I)];
      const detail::BlockLayout layout = this->layout(c0);
      for (Eigen::Index c = 0; c < count; ++c) {
        const Eigen::Index j = idx[static_cast<std::size_t>(c)];
        if (j >= c0 && j < c1)
          for (Eigen::Index p0 = 0; p0 < c1; p0 += layout.stride(p0))  // one contiguous piece per panel
            out.col(c).segment(p0, layout.stride(p0)) =
                Eigen::Map<const StorageVector>(stored + layout.offset(p0, j - c0), layout.stride(p0))
                    .template cast<Scalar>();
      }
      // Rows c0 .. c1 − 1 of every requested j < c0 (row j of this block column), panel by panel:
      // the stored columns of a panel in turn, each read at the requested rows in ascending order.
      const auto end = std::lower_bound(sorted.begin(), sorted.end(), std::pair<Eigen::Index, Eigen::Index>{c0, 0});
      for (auto first = sorted.begin(); first != end;) {
        const Eigen::Index p0 = layout.panel_start(first->first), height = layout.stride(p0);
        const auto last = std::lower_bound(first, end, std::pair<Eigen::Index, Eigen::Index>{p0 + height, 0});
        const Storage* panel = stored + layout.offset(p0, 0);
        for (Eigen::Index i = c0; i < c1; ++i) {
          const Storage* column = panel + (i - c0) * height;
          for (auto it = first; it != last; ++it) out(i, it->second) = static_cast<Scalar>(column[it->first - p0]);
        }
        first = last;
      }
    }
  }

  /// Bytes held by the triangle.
  std::size_t bytes() const {
    return m_offsets.back() * sizeof(Storage);
  }
  /// The options, panel resolved (never −1).
  const PackedGramOptions& options() const {
    return m_options;
  }
  /// Raw storage of block column J, laid out as detail::BlockLayout{c1, c1 − c0, options().panel}.
  const Storage* block_data(Eigen::Index J) const {
    return m_data + m_offsets[static_cast<std::size_t>(J)];
  }

 private:
  using StorageVector = Eigen::Matrix<Storage, Eigen::Dynamic, 1>;

  /// The layout of the block column starting at column c0.
  detail::BlockLayout layout(Eigen::Index c0) const {
    const Eigen::Index c1 = std::min(m_n, c0 + m_options.block);
    return {c1, c1 - c0, m_options.panel};
  }

  Eigen::Index m_n = 0;
  PackedGramOptions m_options;
  std::vector<std::size_t> m_offsets;
  std::unique_ptr<Storage[], detail::AlignedDelete> m_owned;
  detail::MappedFile m_file;
  Storage* m_data = nullptr;
};

/// Σ^L or Θ^L (kind nngp or ntk) of the rows of x (n x d) as a PackedGram, filled tile by tile with
/// kernel_into (no n x n temporary; a tile buffer of at most n x block unless the storage is
/// column-major double).
/// kernel_into's exceptions; progress is called after every tile.
template <class Storage = double, class Arch, class D>
PackedGram<typename D::Scalar, Storage> packed_gram(const Arch& arch, const Eigen::MatrixBase<D>& x, KernelKind kind,
                                                    const KernelOptions& kernel_options = {},
                                                    const PackedGramOptions& options = {},
                                                    const GramProgress& progress = {}) {
  using Scalar = typename D::Scalar;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  detail::check_request("packed_gram", arch, x, x, kernel_options);
  if (kind == KernelKind::both)
    detail::fail<std::invalid_argument>("packed_gram", "kind must be nngp or ntk (got both)");
  PackedGram<Scalar, Storage> gram(x.rows(), options);
  const Matrix points = x;  // contiguous rows for the tile views
  gram.fill(
      [&](Eigen::Index c0, Eigen::Index c1, Eigen::Ref<Matrix> out) {
        detail::compute_into("packed_gram", arch, points.topRows(c1), points.middleRows(c0, c1 - c0), false, kind, out,
                             out, kernel_options);
      },
      progress);
  return gram;
}

/// Σ^L or Θ^L of the rows of x recomputed by tiles in every apply: memory O(n · block), cost
/// O(n² L) kernel entries per apply (≈ the cost of computing the Gram matrix once).  Holds a copy
/// of arch, x and the options.
template <class Arch, class Scalar_ = double>
class MatrixFreeGram {
 public:
  using Scalar = Scalar_;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  /// kernel_into's exceptions for the inputs; std::invalid_argument for kind both or block < 1.
  template <class D>
  MatrixFreeGram(const Arch& arch, const Eigen::MatrixBase<D>& x, KernelKind kind,
                 const KernelOptions& kernel_options = {}, Eigen::Index block = 1024)
      : m_arch(arch), m_x(x), m_kind(kind), m_options(kernel_options), m_block(block) {
    detail::check_request("MatrixFreeGram", arch, x, x, kernel_options);
    detail::check_at_least<Eigen::Index>("MatrixFreeGram", "block", block, 1);
    if (kind == KernelKind::both)
      detail::fail<std::invalid_argument>("MatrixFreeGram", "kind must be nngp or ntk (got both)");
  }

  Eigen::Index rows() const { return m_x.rows(); }

  void apply(const Eigen::Ref<const Matrix>& v, Eigen::Ref<Matrix> out) const {
    const Eigen::Index n = m_x.rows();
    Matrix acc = Matrix::Zero(n, v.cols()), tile;
    detail::GramScratch<Scalar> scratch;
    for (Eigen::Index c0 = 0; c0 < n; c0 += m_block) {
      const Eigen::Index c1 = std::min(n, c0 + m_block), w = c1 - c0;
      tile.resize(c1, w);
      detail::compute_into("MatrixFreeGram::apply", m_arch, m_x.topRows(c1), m_x.middleRows(c0, w), false, m_kind, tile,
                           tile, m_options);
      detail::symmetrize_diagonal_block(tile, c0, w);
      detail::accumulate_block_column<Scalar, Scalar>(tile.data(), detail::BlockLayout{c1, w, 0}, c0, v, acc, scratch,
                                                      detail::long_chunks_pay());
    }
    out = acc;
  }
  Vector diagonal() const {
    const auto d = kernel_diagonal(m_arch, m_x, m_options);
    return m_kind == KernelKind::ntk ? Vector(d.ntk.col(0)) : Vector(d.nngp.col(0));
  }
  void columns(const std::vector<Eigen::Index>& idx, Eigen::Ref<Matrix> out) const {
    Matrix picked(static_cast<Eigen::Index>(idx.size()), m_x.cols());
    for (std::size_t c = 0; c < idx.size(); ++c) picked.row(static_cast<Eigen::Index>(c)) = m_x.row(idx[c]);
    detail::compute_into("MatrixFreeGram::columns", m_arch, m_x, picked, false, m_kind, out, out, m_options);
  }

 private:
  Arch m_arch;
  Matrix m_x;
  KernelKind m_kind;
  KernelOptions m_options;
  Eigen::Index m_block;
};

template <class Arch, class D>
MatrixFreeGram(const Arch&, const Eigen::MatrixBase<D>&, KernelKind, const KernelOptions& = {}, Eigen::Index = 1024)
    -> MatrixFreeGram<Arch, typename D::Scalar>;

/// A non-owning, type-erased view of any Gram operator with the same Scalar (it must outlive the
/// view).  Code that handles several operator types (the tool, the Python bindings) passes a
/// GramRef to the solvers, so cg_solve, dynamics_factor and the preconditioner are compiled once
/// per Scalar instead of once per operator and activation.  Each call costs one indirect call,
/// nothing per entry.
template <class Scalar_ = double>
class GramRef {
 public:
  using Scalar = Scalar_;
  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  template <class Op, class = std::enable_if_t<!std::is_same_v<Op, GramRef>>>
  GramRef(const Op& op)  // NOLINT(google-explicit-constructor): a view, converted implicitly
      : m_op(&op), m_rows(op.rows()), m_apply(&apply_of<Op>), m_diagonal(&diagonal_of<Op>), m_columns(&columns_of<Op>) {
    detail::require_gram_operator<Op>();
    static_assert(std::is_same_v<typename Op::Scalar, Scalar>, "ntk::GramRef: the operator's Scalar differs");
  }

  Eigen::Index rows() const { return m_rows; }
  void apply(const Eigen::Ref<const Matrix>& v, Eigen::Ref<Matrix> out) const { m_apply(m_op, v, out); }
  Vector diagonal() const { return m_diagonal(m_op); }
  void columns(const std::vector<Eigen::Index>& idx, Eigen::Ref<Matrix> out) const { m_columns(m_op, idx, out); }

 private:
  template <class Op>
  static void apply_of(const void* op, const Eigen::Ref<const Matrix>& v, Eigen::Ref<Matrix> out) {
    static_cast<const Op*>(op)->apply(v, out);
  }
  template <class Op>
  static Vector diagonal_of(const void* op) {
    return static_cast<const Op*>(op)->diagonal();
  }
  template <class Op>
  static void columns_of(const void* op, const std::vector<Eigen::Index>& idx, Eigen::Ref<Matrix> out) {
    static_cast<const Op*>(op)->columns(idx, out);
  }

  const void* m_op;
  Eigen::Index m_rows;
  void (*m_apply)(const void*, const Eigen::Ref<const Matrix>&, Eigen::Ref<Matrix>);
  Vector (*m_diagonal)(const void*);
  void (*m_columns)(const void*, const std::vector<Eigen::Index>&, Eigen::Ref<Matrix>);
};

static_assert(is_gram_operator_v<DenseGram<double>>, "DenseGram models the Gram operator concept");
static_assert(is_gram_operator_v<GramRef<double>>, "GramRef models the Gram operator concept");
static_assert(is_gram_operator_v<PackedGram<double, float>>, "PackedGram models the Gram operator concept");

}  // namespace ntk
