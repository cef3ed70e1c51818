// The argument list of every GEMM entry point (sgemm, sgemmBf16, gemmBf16): (transA, transB, M, N, K, alpha, A,
// lda, B, ldb, beta, C, ldc), row-major C (M,N) = alpha·op(A)·op(B) + beta·C with op(A) (M,K), op(B) (K,N). Read
// and checked in one place so the three entry points cannot drift: leading dimensions at least the row width (BLAS
// rejects smaller with a stderr line), lengths against the strides so no library reads or writes out of bounds,
// and the 32-bit limit of the BLAS interface.
#pragma once
#include "common.h"

struct GemmArgs {
  bool ta = false, tb = false;
  int64_t M = 0, N = 0, K = 0, lda = 0, ldb = 0, ldc = 0;
  float alpha = 0, beta = 0;
  // op(A) is stored (aRows, aCols), op(B) (bRows, bCols), each with its leading dimension.
  int64_t aRows = 0, aCols = 0, bRows = 0, bCols = 0;
};

inline float* gemmOperand(Args& a, int i, int64_t need, const char* name, float*, int64_t* len = nullptr) {
  return a.f32(i, need, name, len);
}
inline uint16_t* gemmOperand(Args& a, int i, int64_t need, const char* name, uint16_t*, int64_t* len = nullptr) {
  return a.u16(i, need, name, len);
}

// Fills the stored shapes of op(A) and op(B) from g's transposes and M, N, K, and says what is wrong with its
// leading dimensions ("" when nothing): at least the row width, which BLAS rejects otherwise with a stderr line.
inline std::string gemmShapeError(GemmArgs& g) {
  g.aCols = g.ta ? g.M : g.K;
  g.bCols = g.tb ? g.K : g.N;
  g.aRows = g.ta ? g.K : g.M;
  g.bRows = g.tb ? g.N : g.K;
  if (g.lda < std::max<int64_t>(1, g.aCols))
    return "lda = " + std::to_string(g.lda) + " < row width " + std::to_string(g.aCols);
  if (g.ldb < std::max<int64_t>(1, g.bCols))
    return "ldb = " + std::to_string(g.ldb) + " < row width " + std::to_string(g.bCols);
  if (g.ldc < std::max<int64_t>(1, g.N)) return "ldc = " + std::to_string(g.ldc) + " < N = " + std::to_string(g.N);
  return "";
}

// Elements A, B and C must hold from where the product starts: none for an operand that is not read (K = 0) and
// nothing at all for an empty product (M or N is 0).
inline void gemmNeeds(const GemmArgs& g, int64_t& a, int64_t& b, int64_t& c) {
  const bool empty = g.M == 0 || g.N == 0;
  a = empty || g.K == 0 ? 0 : (g.aRows - 1) * g.lda + g.aCols;
  b = empty || g.K == 0 ? 0 : (g.bRows - 1) * g.ldb + g.bCols;
  c = empty ? 0 : (g.M - 1) * g.ldc + g.N;
}

// Beyond the 32-bit BLAS interface (the f32 fallback's).
inline bool gemmTooLarge(const GemmArgs& g) {
  return g.M > INT32_MAX || g.N > INT32_MAX || g.K > INT32_MAX || g.lda > INT32_MAX || g.ldb > INT32_MAX ||
         g.ldc > INT32_MAX;
}

// Reads the arguments into g, A, B, C (element types TA, TB, TC: float, or uint16_t for bf16 bits). false when the
// call is over: a wrong argument (the JS exception is pending) or an empty product (M or N is 0: nothing to write).
template <typename TA, typename TB = TA, typename TC = float>
bool readGemmArgs(Args& a, GemmArgs& g, TA*& A, TB*& B, TC*& C) {
  g.ta = a.flag(0);
  g.tb = a.flag(1);
  g.M = a.size(2, "M");
  g.N = a.size(3, "N");
  g.K = a.size(4, "K");
  g.alpha = (float)a.num(5, "alpha");
  g.lda = a.size(7, "lda");
  g.ldb = a.size(9, "ldb");
  g.ldc = a.size(12, "ldc");
  g.beta = (float)a.num(10, "beta");
  if (!a.ok) return false;
  const std::string bad = gemmShapeError(g);
  if (!bad.empty()) a.fail(bad);
  int64_t needA = 0, needB = 0, needC = 0;
  gemmNeeds(g, needA, needB, needC);
  A = gemmOperand(a, 6, needA, "A", A);
  B = gemmOperand(a, 8, needB, "B", B);
  C = gemmOperand(a, 11, needC, "C", C);
  if (!a.ok || g.M == 0 || g.N == 0) return false;
  if (gemmTooLarge(g)) {
    a.fail("dimensions exceed the 32-bit BLAS interface");
    return false;
  }
  return true;
}

// The element type of argument i as JS passed it: true for a Uint16Array (bf16 bits). Anything else is read as
// f32 by readGemmArgs, which names a wrong type.
inline bool isU16Arg(Args& a, int i) {
  if ((size_t)i >= a.info.Length()) return false;
  napi_typedarray_type type;
  if (napi_get_typedarray_info(a.env, a.info[i], &type, nullptr, nullptr, nullptr, nullptr) != napi_ok) return false;
  return type == napi_uint16_array;
}
