// bfloat16: conversions (f32 → bf16 round-to-nearest-even, bf16 → f32 exact) and the bf16-input matmul with f32
// accumulation that mixed precision's forward and backward products use (torch's autocast / FSDP2 param_dtype
// bfloat16: inputs rounded to bf16, products summed in f32, f32 result).
//
// Where oneDNN is absent or the CPU has no bf16 dot-product instructions (AVX512_BF16 or AMX), the inputs stay
// bf16 in memory, are widened to f32 (exactly) and multiplied by the f32 path; the result is the same math up to
// summation order. blasInfo().bf16Dot says which CPU this is; the TypeScript layer says it once at start-up.
#include "common.h"
#include "bf16_simd.h"
#include "gemm_args.h"
#include "matmul.h"
#include <type_traits>
#include <vector>


static void roundRows(const float* src, int64_t lds, int64_t rows, int64_t cols, uint16_t* dst, int64_t ldd);

// src (n) f32 → dst (n) bf16 bits.
static Napi::Value ToBf16(const Napi::CallbackInfo& info) {
  Args a(info, "toBf16");
  int64_t n = a.size(2, "n");
  float* src = a.f32(0, n, "src");
  uint16_t* dst = a.u16(1, n, "dst");
  if (!a.ok) return a.env.Undefined();
  roundRows(src, n, 1, n, dst, n);
  return a.env.Undefined();
}

// toBf16Rows(src, lds, rows, cols, dst, ldd): a (rows, cols) block of f32 rows at stride lds → bf16 rows at stride
// ldd (one slice of a fused projection's output, e.g. q of [q | k | v], to its own dense array; or back into one).
static Napi::Value ToBf16Rows(const Napi::CallbackInfo& info) {
  Args a(info, "toBf16Rows");
  const int64_t lds = a.size(1, "lds"), rows = a.size(2, "rows"), cols = a.size(3, "cols"), ldd = a.size(5, "ldd");
  if (a.ok && (lds < cols || ldd < cols))
    a.fail("leading dimensions lds = " + std::to_string(lds) + ", ldd = " + std::to_string(ldd) +
           " must be at least cols = " + std::to_string(cols));
  const float* src = a.f32(0, rows == 0 || cols == 0 ? 0 : (rows - 1) * lds + cols, "src");
  uint16_t* dst = a.u16(4, rows == 0 || cols == 0 ? 0 : (rows - 1) * ldd + cols, "dst");
  if (!a.ok || rows == 0 || cols == 0) return a.env.Undefined();
  roundRows(src, lds, rows, cols, dst, ldd);
  return a.env.Undefined();
}

// src (n) bf16 bits → dst (n) f32.
static Napi::Value FromBf16(const Napi::CallbackInfo& info) {
  Args a(info, "fromBf16");
  int64_t n = a.size(2, "n");
  uint16_t* src = a.u16(0, n, "src");
  float* dst = a.f32(1, n, "dst");
  if (!a.ok) return a.env.Undefined();
#pragma omp parallel for num_threads(threadsFor(n)) schedule(static)
  for (int64_t i = 0; i < n; i++) dst[i] = bf16ToF(src[i]);
  return a.env.Undefined();
}

// Widens a row-major (rows, cols) block with leading dimension ld to a dense f32 copy.
static void widen(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld, Buf& out) {
  out.alloc(rows * cols);
  float* d = out.data();
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) d[r * cols + c] = bf16ToF(src[r * ld + c]);
}

// gemmBf16(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc): as sgemm, with A and B Uint16Arrays of
// bf16 bits and C f32.
static Napi::Value GemmBf16(const Napi::CallbackInfo& info) {
  Args a(info, "gemmBf16");
  GemmArgs g;
  uint16_t *A = nullptr, *B = nullptr;
  float* C = nullptr;
  if (!readGemmArgs(a, g, A, B, C)) return a.env.Undefined();
  const bool ta = g.ta, tb = g.tb;
  const int64_t M = g.M, N = g.N, K = g.K, lda = g.lda, ldb = g.ldb, ldc = g.ldc;
  const int64_t aRows = g.aRows, aCols = g.aCols, bRows = g.bRows, bCols = g.bCols;
  const float alpha = g.alpha, beta = g.beta;
  if (matmulMode() != kMatmulBlas && cpuHasBf16Dot() && dnnlGemmBf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
    return a.env.Undefined();
  // bf16 storage, f32 compute: widen both operands (exact) and run the f32 path.
  Buf wa, wb;
  if (K > 0) {
    widen(A, aRows, aCols, lda, wa);
    widen(B, bRows, bCols, ldb, wb);
  }
  matmulF32(ta, tb, M, N, K, alpha, wa.data(), std::max<int64_t>(1, aCols), wb.data(), std::max<int64_t>(1, bCols), beta, C,
            ldc);
  return a.env.Undefined();
}

// Rounds a row-major (rows, cols) f32 block (leading dimension lds) into a bf16 one (leading dimension ldd), in
// parallel.
// VL at a time by the vector rounding of bf16_simd.h (the same bits as toBf16), in chunks of at least 4096
// elements per thread whatever the row shape (one long row — toBf16 — or many short ones).
static void roundRows(const float* src, int64_t lds, int64_t rows, int64_t cols, uint16_t* dst, int64_t ldd) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t perRow = (cols + 4095) / 4096, chunk = (cols + perRow - 1) / perRow;
#pragma omp parallel for num_threads(threadsFor(rows * cols)) schedule(static)
  for (int64_t t = 0; t < rows * perRow; t++) {
    const int64_t r = t / perRow, c0 = (t % perRow) * chunk, c1 = std::min(cols, c0 + chunk);
    const float* s = src + r * lds;
    uint16_t* d = dst + r * ldd;
    int64_t c = c0;
    for (; c + VL <= c1; c += VL) storeAs(d + c, ldv(s + c));
    for (; c < c1; c++) storeAs(d + c, s[c]);
  }
}

// Rounds a row-major (rows, cols) block with leading dimension ld to dense bf16 (ld = cols).
static void narrow(const float* src, int64_t rows, int64_t cols, int64_t ld, std::vector<uint16_t>& out) {
  out.resize((size_t)(rows * cols));
  roundRows(src, ld, rows, cols, out.data(), cols);
}

// One operand of sgemmBf16: f32 (rounded to bf16 into per-thread scratch here) or bf16 bits the caller rounded
// once for several products (a layer's input feeding q, k and v; a gradient feeding both backward products).
struct Bf16Operand {
  const uint16_t* p = nullptr;
  int64_t ld = 0;
};
static Bf16Operand operand(const float* src, int64_t rows, int64_t cols, int64_t ld, std::vector<uint16_t>& scratch) {
  narrow(src, rows, cols, ld, scratch);
  return {scratch.data(), cols};
}
static Bf16Operand operand(const uint16_t* src, int64_t, int64_t, int64_t ld, std::vector<uint16_t>&) {
  return {src, ld};
}

// The f32 result of a bf16-input product into C: f32 C directly; bf16 C through an f32 scratch rounded once.
static bool gemmBf16Into(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const Bf16Operand& oa,
                         const Bf16Operand& ob, float beta, float* C, int64_t ldc) {
  return matmulMode() != kMatmulBlas && cpuHasBf16Dot() &&
         dnnlGemmBf16(ta, tb, M, N, K, alpha, oa.p, oa.ld, ob.p, ob.ld, beta, C, ldc);
}
static bool gemmBf16Into(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float, const Bf16Operand& oa,
                         const Bf16Operand& ob, float, uint16_t* C, int64_t ldc) {
  return matmulMode() != kMatmulBlas && cpuHasBf16Dot() &&
         dnnlGemmBf16Out(ta, tb, M, N, K, oa.p, oa.ld, ob.p, ob.ld, C, ldc);
}
static void f32Into(const float*, int64_t, int64_t, float*, int64_t) {}  // f32 C: the product is already there
static void f32Into(const float* src, int64_t M, int64_t N, uint16_t* C, int64_t ldc) {
  roundRows(src, N, M, N, C, ldc);
}

// The product of checked arguments (readGemmArgs, or one group of sgemmBf16Groups) on raw pointers.
template <typename TA, typename TB, typename TC>
static void bf16Product(const GemmArgs& g, const TA* A, const TB* B, TC* C) {
  constexpr bool outBf16 = std::is_same<TC, uint16_t>::value;
  const bool ta = g.ta, tb = g.tb;
  const int64_t M = g.M, N = g.N, K = g.K, ldc = g.ldc;
  const int64_t aRows = g.aRows, aCols = g.aCols, bRows = g.bRows, bCols = g.bCols;
  const float alpha = g.alpha, beta = g.beta;
  // Where C is bf16, the f32 paths below compute into this scratch, rounded into C at the end.
  thread_local std::vector<float> cs;
  float* Cf = nullptr;
  int64_t ldcf = ldc;
  if constexpr (outBf16) {
    cs.resize((size_t)(M * N));
    Cf = cs.data();
    ldcf = N;
  } else {
    Cf = C;
  }
  if (K == 0) {  // C = beta·C (a bf16 C: beta is 0, so zeros): no operand is read
    matmulF32(ta, tb, M, N, K, alpha, nullptr, std::max<int64_t>(1, aCols), nullptr, std::max<int64_t>(1, bCols), beta,
              Cf, ldcf);
    f32Into(Cf, M, N, C, ldc);
    return;
  }
  thread_local std::vector<uint16_t> sa, sb;
  const Bf16Operand oa = operand(A, aRows, aCols, g.lda, sa);
  const Bf16Operand ob = operand(B, bRows, bCols, g.ldb, sb);
  if (gemmBf16Into(ta, tb, M, N, K, alpha, oa, ob, beta, C, ldc)) return;
  // No bf16 dot products (or no oneDNN): the rounded values, widened back exactly, through the f32 path.
  Buf wa, wb;
  widen(oa.p, aRows, aCols, oa.ld, wa);
  widen(ob.p, bRows, bCols, ob.ld, wb);
  matmulF32(ta, tb, M, N, K, alpha, wa.data(), aCols, wb.data(), bCols, beta, Cf, ldcf);
  f32Into(Cf, M, N, C, ldc);
}

template <typename TA, typename TB, typename TC>
static void sgemmBf16Typed(Args& a) {
  GemmArgs g;
  TA* A = nullptr;
  TB* B = nullptr;
  TC* C = nullptr;
  // A bf16 C is the rounded product itself: nothing to scale or accumulate into (checked before any return).
  constexpr bool outBf16 = std::is_same<TC, uint16_t>::value;
  if (outBf16 && a.ok && ((float)a.num(5, "alpha") != 1.0f || (float)a.num(10, "beta") != 0.0f)) {
    a.fail("a bf16 C (Uint16Array) takes alpha = 1 and beta = 0: the product is rounded once, never accumulated");
    return;
  }
  if (!readGemmArgs(a, g, A, B, C)) return;
  bf16Product(g, A, B, C);
}

// Runs products side by side, one per OpenMP thread and each on that thread alone (sgemmBf16Groups's groups);
// one after another where the CPU has no bf16 dot products or fewer than two threads are there.
template <typename F>
static void sideBySide(int64_t n, F&& one) {
  const bool side = matmulMode() != kMatmulBlas && cpuHasBf16Dot() && dnnlAvailable();
  const int nt = side ? (int)std::min<int64_t>(n, omp_get_max_threads()) : 1;
  if (nt <= 1) {
    for (int64_t j = 0; j < n; j++) one(j);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    // Each product on this thread alone: oneDNN keys its primitives by the thread count it sees.
    omp_set_num_threads(1);
#pragma omp for schedule(dynamic, 1)
    for (int64_t j = 0; j < n; j++) one(j);
  }
}

// sgemmBf16Groups(transA, transB, dims, offs, alpha, A, lda, B, ldb, beta, C, ldc): G independent sgemmBf16
// products sharing transposes, leading dimensions, alpha and beta — a layer's routed experts, each its own rows and
// its own slice of the stacked weights. dims (Int32Array, 3G) holds each group's M, N, K; offs (Int32Array, 3G) the
// element offsets of its A, B and C. The groups run side by side, one per OpenMP thread, each product on one
// thread: at expert shapes (a few hundred rows) two single-threaded products beside each other did 665–687 GFLOP/s
// here where the same products one after another on two threads did 433–551. Each group's result is the one
// sgemmBf16 gives for it. Without bf16 dot products the groups run one after another (the widened f32 path may be
// OpenBLAS, which is not called from several threads at once here).
template <typename TA, typename TB, typename TC>
static void sgemmBf16GroupsTyped(Args& a) {
  constexpr bool outBf16 = std::is_same<TC, uint16_t>::value;
  const bool ta = a.flag(0), tb = a.flag(1);
  int64_t nd = 0, no = 0, la = 0, lb = 0, lc = 0;
  const int32_t* dims = a.i32(2, 0, "dims", &nd);
  const int32_t* offs = a.i32(3, 0, "offs", &no);
  const float alpha = (float)a.num(4, "alpha");
  TA* A = gemmOperand(a, 5, 0, "A", (TA*)nullptr, &la);
  const int64_t lda = a.size(6, "lda");
  TB* B = gemmOperand(a, 7, 0, "B", (TB*)nullptr, &lb);
  const int64_t ldb = a.size(8, "ldb");
  const float beta = (float)a.num(9, "beta");
  TC* C = gemmOperand(a, 10, 0, "C", (TC*)nullptr, &lc);
  const int64_t ldc = a.size(11, "ldc");
  if (!a.ok) return;
  if (nd % 3 != 0 || no != nd) {
    a.fail("dims and offs hold M, N, K and the A, B, C offsets of each group: equal lengths, a multiple of 3 (got " +
           std::to_string(nd) + " and " + std::to_string(no) + ")");
    return;
  }
  if (outBf16 && (alpha != 1.0f || beta != 0.0f)) {
    a.fail("a bf16 C (Uint16Array) takes alpha = 1 and beta = 0: the product is rounded once, never accumulated");
    return;
  }
  const int64_t G = nd / 3;
  std::vector<GemmArgs> gs((size_t)G);
  std::vector<int64_t> order;
  std::vector<double> work((size_t)G);
  for (int64_t i = 0; i < G; i++) {
    GemmArgs& g = gs[(size_t)i];
    g.ta = ta, g.tb = tb, g.alpha = alpha, g.beta = beta, g.lda = lda, g.ldb = ldb, g.ldc = ldc;
    g.M = dims[3 * i], g.N = dims[3 * i + 1], g.K = dims[3 * i + 2];
    const int64_t oa = offs[3 * i], ob = offs[3 * i + 1], oc = offs[3 * i + 2];
    const std::string at = "group " + std::to_string(i) + ": ";
    if (g.M < 0 || g.N < 0 || g.K < 0 || oa < 0 || ob < 0 || oc < 0) return a.fail(at + "a negative size or offset");
    const std::string bad = gemmShapeError(g);
    if (!bad.empty()) return a.fail(at + bad);
    if (g.M == 0 || g.N == 0) continue;  // nothing to write
    int64_t needA = 0, needB = 0, needC = 0;
    gemmNeeds(g, needA, needB, needC);
    const auto few = [&](const char* op, int64_t len) {
      a.fail(at + op + " has " + std::to_string(len) + " elements, too few for its rows");
    };
    if (needA > 0 && oa + needA > la) return few("A", la);
    if (needB > 0 && ob + needB > lb) return few("B", lb);
    if (oc + needC > lc) return few("C", lc);
    if (gemmTooLarge(g)) return a.fail(at + "dimensions exceed the 32-bit BLAS interface");
    order.push_back(i);
    work[(size_t)i] = (double)g.M * g.N * std::max<int64_t>(1, g.K);
  }
  // Largest first, so the last products to start are the short ones.
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return work[(size_t)x] > work[(size_t)y]; });
  const int64_t n = (int64_t)order.size();
  auto one = [&](int64_t j) {
    const int64_t i = order[(size_t)j];
    bf16Product(gs[(size_t)i], A + offs[3 * i], B + offs[3 * i + 1], C + offs[3 * i + 2]);
  };
  sideBySide(n, one);
}

// Each operand's element type as JS passed it (Float32Array, or Uint16Array of bf16 bits), picked once here for
// every entry point: Op<TA, TB, TC>::run(a) with A, B and C at arguments ia, ib and ic.
template <template <typename, typename, typename> class Op, typename TC>
static void byAB(Args& a, bool ha, bool hb) {
  if (ha && hb) Op<uint16_t, uint16_t, TC>::run(a);
  else if (ha) Op<uint16_t, float, TC>::run(a);
  else if (hb) Op<float, uint16_t, TC>::run(a);
  else Op<float, float, TC>::run(a);
}
template <template <typename, typename, typename> class Op>
static void byOperandTypes(Args& a, int ia, int ib, int ic) {
  const bool ha = isU16Arg(a, ia), hb = isU16Arg(a, ib);
  if (isU16Arg(a, ic)) byAB<Op, uint16_t>(a, ha, hb);
  else byAB<Op, float>(a, ha, hb);
}
template <typename TA, typename TB, typename TC>
struct SgemmBf16Op {
  static void run(Args& a) { sgemmBf16Typed<TA, TB, TC>(a); }
};
template <typename TA, typename TB, typename TC>
struct SgemmBf16GroupsOp {
  static void run(Args& a) { sgemmBf16GroupsTyped<TA, TB, TC>(a); }
};
static Napi::Value SgemmBf16Groups(const Napi::CallbackInfo& info) {
  Args a(info, "sgemmBf16Groups");
  byOperandTypes<SgemmBf16GroupsOp>(a, 5, 7, 10);
  return a.env.Undefined();
}
// sgemmBf16(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc): sgemm's arguments, computed as mixed
// precision does: A and B rounded to bf16, products summed in f32 into f32 C. A and B are each a Float32Array
// (rounded here, into per-thread scratch reused across calls) or a Uint16Array of bf16 bits already rounded by
// the caller (toBf16), so an operand used by several products is rounded once. C may be a Uint16Array too (alpha
// 1, beta 0): the product rounded to bf16 as it is written, as a bf16 nn.Linear's output is.
static Napi::Value SgemmBf16(const Napi::CallbackInfo& info) {
  Args a(info, "sgemmBf16");
  byOperandTypes<SgemmBf16Op>(a, 6, 8, 11);
  return a.env.Undefined();
}

void RegisterBf16(Napi::Env env, Napi::Object exports) {
  exports.Set("sgemmBf16", Napi::Function::New(env, SgemmBf16));
  exports.Set("sgemmBf16Groups", Napi::Function::New(env, SgemmBf16Groups));
  exports.Set("toBf16", Napi::Function::New(env, ToBf16));
  exports.Set("toBf16Rows", Napi::Function::New(env, ToBf16Rows));
  exports.Set("fromBf16", Napi::Function::New(env, FromBf16));
  exports.Set("gemmBf16", Napi::Function::New(env, GemmBf16));
}
