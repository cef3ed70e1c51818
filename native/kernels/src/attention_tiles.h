// Shared parts of the causal attention kernels (attention.cc: f32, attention_bf16.cc: bf16 inputs): block
// sizes, the f32 register-tile product, in-register transposes, row packing, the shape and its thread policy.
#pragma once
#include "common.h"
#include "gemm_args.h"  // gemmOperand: a typed-array argument of the element type asked for

namespace {


constexpr int64_t BQ = 64;  // query rows per block
constexpr int64_t BK = 64;  // keys per block (= 64 / VL vectors)
constexpr int64_t MR = 8;   // block row counts are padded to a multiple of the micro-kernel height

// Below AVX-512 GCC likes to fold a B vector's load into each FMA that uses it (vfmadd231ps mem, bcast, acc): one
// load per row instead of one per k, which made the AVX2 tile load-bound; an empty asm makes each B vector a
// register. (The AVX-512 code is left exactly as it was; it was never measured on this question.)
template <int NV>
inline void pinB(vf* b) {
#if MOE_VL < 16
  for (int v = 0; v < NV; v++) __asm__("" : "+x"(b[v]));
#else
  (void)b;
#endif
}

// C tile (R rows × VL·NV cols) (+)= Σ_k A[r·ars + k·acs] · B[k·ldb + col]. Accumulators stay in registers
// (R·NV + NV + 1 ≤ 32 zmm / 16 ymm); each k loads NV vectors of B and broadcasts R scalars of A. Each C element
// sums over k in order whatever the tile shape, so the shapes per ISA give the same results.
template <int R, int NV>
inline void tile(int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t ldb, float* C,
                 int64_t ldc, bool accumulate) {
  vf c[R][NV];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) c[r][v] = accumulate ? ldv(C + r * ldc + VL * v) : vf{};
  for (int64_t k = 0; k < K; k++) {
    vf b[NV];
    for (int v = 0; v < NV; v++) b[v] = ldv(B + k * ldb + VL * v);
    pinB<NV>(b);
    const float* ak = A + k * acs;
    for (int r = 0; r < R; r++) {
      const float av = ak[r * ars];
      for (int v = 0; v < NV; v++) c[r][v] += av * b[v];
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) stv(C + r * ldc + VL * v, c[r][v]);
}

// C (M,N) (+)= A (M,K) · B (K,N), where A's element (m,k) is A[m·ars + k·acs] so a transposed A is read in place.
// Requires M % 8 == 0 and N % 16 == 0 (callers pad their tiles with zeros).
inline void mm(int64_t M, int64_t N, int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t ldb, float* C,
        int64_t ldc, bool accumulate) {
#if MOE_VL < 16
  // 16 ymm (xmm without AVX): 8 accumulators (4×2), 2 B vectors and the broadcast A scalar. A 4×3 tile (12 + 3 + 1)
  // fits on paper but measured no faster here, and leaves GCC no spare register.
  for (int64_t n0 = 0; n0 < N; n0 += 2 * VL) {
    const int64_t nv = std::min<int64_t>(2, (N - n0) / VL);
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
      const float* Am = A + m0 * ars;
      const float* Bn = B + n0;
      float* Cm = C + m0 * ldc + n0;
      if (nv == 1) {
        tile<8, 1>(K, Am, ars, acs, Bn, ldb, Cm, ldc, accumulate);
      } else {
        tile<4, 2>(K, Am, ars, acs, Bn, ldb, Cm, ldc, accumulate);
        tile<4, 2>(K, Am + 4 * ars, ars, acs, Bn, ldb, Cm + 4 * ldc, ldc, accumulate);
      }
    }
  }
#else
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    const int64_t nv = std::min<int64_t>(4, (N - n0) / 16);
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
      const float* Am = A + m0 * ars;
      const float* Bn = B + n0;
      float* Cm = C + m0 * ldc + n0;
      switch (nv) {
        case 1:
          tile<8, 1>(K, Am, ars, acs, Bn, ldb, Cm, ldc, accumulate);
          break;
        case 2:
          tile<8, 2>(K, Am, ars, acs, Bn, ldb, Cm, ldc, accumulate);
          break;
        case 3:
          tile<4, 3>(K, Am, ars, acs, Bn, ldb, Cm, ldc, accumulate);
          tile<4, 3>(K, Am + 4 * ars, ars, acs, Bn, ldb, Cm + 4 * ldc, ldc, accumulate);
          break;
        default:
          tile<4, 4>(K, Am, ars, acs, Bn, ldb, Cm, ldc, accumulate);
          tile<4, 4>(K, Am + 4 * ars, ars, acs, Bn, ldb, Cm + 4 * ldc, ldc, accumulate);
          break;
      }
    }
  }
#endif
}

struct Shape {
  int64_t B, S, Hq, Hkv, dk, dv, G, dkp, dvp, nQB, nKB;
  float scale;
};

// VL×VL block transpose in registers: log2(VL) rounds of interleaving rows i and i+VL/2 (each rotates the
// (row, column) index bits by one) turn row r into column r. Two-source permutes instead of VL² strided scalar
// loads and stores (packing Kᵀ/Vᵀ/Qᵀ, unpacking dK/dV/O, and Δ = rowwise dO·O, at the debugmodel's head dim of 16).
inline void zip(vf a, vf b, vf& lo, vf& hi) {
#if MOE_VL == 16
  lo = __builtin_shufflevector(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  hi = __builtin_shufflevector(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
#elif MOE_VL == 8
  lo = __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11);
  hi = __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15);
#else
  lo = __builtin_shufflevector(a, b, 0, 4, 1, 5);
  hi = __builtin_shufflevector(a, b, 2, 6, 3, 7);
#endif
}
inline void transposeV(vf r[VL]) {
  for (int round = 1; round < VL; round *= 2) {
    vf t[VL];
    for (int i = 0; i < VL / 2; i++) zip(r[i], r[i + VL / 2], t[2 * i], t[2 * i + 1]);
    for (int i = 0; i < VL; i++) r[i] = t[i];
  }
}
// dst[c·ldd + r] = src[r·lds + c] for an (nr × nc) block: VL×VL tiles in registers where both extents allow,
// scalar for the remainder rows and columns.
inline void transposeBlock(const float* src, int64_t lds, int64_t nr, int64_t nc, float* dst, int64_t ldd) {
  int64_t c0 = 0;
  for (; c0 + VL <= nc; c0 += VL) {
    int64_t r0 = 0;
    for (; r0 + VL <= nr; r0 += VL) {
      vf t[VL];
      for (int i = 0; i < VL; i++) t[i] = ldv(src + (r0 + i) * lds + c0);
      transposeV(t);
      for (int i = 0; i < VL; i++) stv(dst + (c0 + i) * ldd + r0, t[i]);
    }
    for (; r0 < nr; r0++)
      for (int64_t c = c0; c < c0 + VL; c++) dst[c * ldd + r0] = src[r0 * lds + c];
  }
  int64_t r0 = 0;
#if defined(__AVX512F__) && MOE_VL == 16
  // Fewer than VL columns left (all of them at the bf16 kernels' head dim 16: 8 words of pairs per row): masked
  // loads of the rows' remaining columns into VL×VL tiles (the scalar loop below was ~3 % of the bf16 backward).
  if (c0 < nc) {
    const int64_t w = nc - c0;
    const __mmask16 live = (__mmask16)((1u << w) - 1);
    for (; r0 + VL <= nr; r0 += VL) {
      vf t[VL];
      for (int i = 0; i < VL; i++) t[i] = (vf)_mm512_maskz_loadu_ps(live, src + (r0 + i) * lds + c0);
      transposeV(t);
      for (int64_t i = 0; i < w; i++) stv(dst + (c0 + i) * ldd + r0, t[i]);
    }
  }
#endif
  for (; c0 < nc; c0++)
    for (int64_t r = r0; r < nr; r++) dst[c0 * ldd + r] = src[r * lds + c0];
}

// Keys j0..j0+nk of kv head (b,hk), packed as Kt (dk, BK) (for Q·Kᵀ, vectorised over keys), and optionally
// Kp (BK, dkp) row-major; values as Vp (BK, dvp) or Vt (dv, BK). Padding (j ≥ nk, columns ≥ dk/dv) is zero.
inline void packKt(const Shape& s, const float* k, int64_t b, int64_t hk, int64_t j0, int64_t nk, float* Kt) {
  transposeBlock(k + ((b * s.S + j0) * s.Hkv + hk) * s.dk, s.Hkv * s.dk, nk, s.dk, Kt, BK);
  if (nk < BK)
    for (int64_t d = 0; d < s.dk; d++)
      for (int64_t j = nk; j < BK; j++) Kt[d * BK + j] = 0.0f;
}
// Rows are short (a head: 16–192 floats), so copy with vector moves inline rather than a memcpy call per row.
inline void packRows(const float* src0, int64_t rowStride, int64_t n, int64_t width, int64_t widthPad, int64_t rowsPad,
              float* dst) {
  for (int64_t j = 0; j < n; j++) {
    const float* src = src0 + j * rowStride;
    float* out = dst + j * widthPad;
    int64_t d = 0;
    for (; d + VL <= width; d += VL) stv(out + d, ldv(src + d));
    for (; d < width; d++) out[d] = src[d];
    for (; d < widthPad; d++) out[d] = 0.0f;
  }
  if (rowsPad > n) std::memset(dst + n * widthPad, 0, (rowsPad - n) * widthPad * sizeof(float));
}

constexpr float NEG_INF = -std::numeric_limits<float>::infinity();
constexpr float LOG2E = 1.44269504088896341f;
constexpr float LN2 = 0.693147180559945309f;

// Keys visible to query i in the key block starting at j0 with nk real keys (causal: j ≤ i).
inline int64_t visible(int64_t i, int64_t j0, int64_t nk) { return std::min(nk, i - j0 + 1); }

constexpr int PG = VL == 16 ? 4 : 2;

inline bool readShape(Args& a, int first, Shape& s) {
  s.B = a.size(first, "B");
  s.S = a.size(first + 1, "S");
  s.Hq = a.size(first + 2, "Hq");
  s.Hkv = a.size(first + 3, "Hkv");
  s.dk = a.size(first + 4, "dk");
  s.dv = a.size(first + 5, "dv");
  s.scale = (float)a.num(first + 6, "scale");
  if (!a.ok) return false;
  if (s.Hkv == 0 || s.Hq % s.Hkv != 0) {
    a.fail("Hq = " + std::to_string(s.Hq) + " must be a positive multiple of Hkv = " + std::to_string(s.Hkv) +
           " (GQA groups)");
    return false;
  }
  s.G = s.Hq / s.Hkv;
  s.dkp = roundUp(s.dk, 16);
  s.dvp = roundUp(s.dv, 16);
  s.nQB = (s.S + BQ - 1) / BQ;
  s.nKB = (s.S + BK - 1) / BK;
  return true;
}

// Work estimate (multiply-adds of the causal products) to decide whether threads pay off.
inline int attnThreads(const Shape& s, int64_t tasks) {
  const int64_t work = s.B * s.Hq * (s.S * (s.S + 1) / 2) * (s.dk + s.dv);
  int t = threadsFor(work, 1 << 16);
  return (int)std::min<int64_t>(t, std::max<int64_t>(tasks, 1));
}

// The forward's tasks, one per (query block, batch, query head), each thread with its own Scratch. Longest tasks
// (query blocks near the end see the most keys) first, so the dynamic schedule ends evenly. `prologue()` runs
// first in the same parallel region: an orphaned `omp for` preparing operands every task reads, or nothing.
template <typename Scratch, typename Prologue, typename Task>
void forQueryBlocks(const Shape& s, Prologue prologue, Task task) {
  const int64_t perQB = s.B * s.Hq, tasks = perQB * s.nQB;
#pragma omp parallel num_threads(attnThreads(s, tasks))
  {
    prologue();
    Scratch w(s);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; t++) {
      const int64_t qb = s.nQB - 1 - t / perQB, bh = t % perQB;
      task(bh / s.Hq, bh % s.Hq, qb, w);
    }
  }
}

// The backward's tasks, one per (batch, kv head) with its query heads, each thread with its own Scratch.
template <typename Scratch, typename Task>
void forKvHeads(const Shape& s, Task task) {
  const int64_t tasks = s.B * s.Hkv;
#pragma omp parallel num_threads(attnThreads(s, tasks))
  {
    Scratch w(s);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; t++) task(t / s.Hkv, t % s.Hkv, w);
  }
}


// The arrays of attentionFwd / attentionFwdBf16 (q, k, v, o of element type T: float, or uint16_t for bf16 bits;
// lse f32) and of the backward kernels (dout, q, k, v, o of type T; lse, dq, dk, dv f32), read with the shape that
// follows them and checked against it. false when the call is over (a wrong argument: the JS exception is pending).
template <typename T>
struct FwdArrays {
  T *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  float* lse = nullptr;
};
template <typename T>
inline bool readFwdArrays(Args& a, Shape& s, FwdArrays<T>& x) {
  if (!readShape(a, 5, s)) return false;
  x.q = gemmOperand(a, 0, s.B * s.S * s.Hq * s.dk, "q", x.q);
  x.k = gemmOperand(a, 1, s.B * s.S * s.Hkv * s.dk, "k", x.k);
  x.v = gemmOperand(a, 2, s.B * s.S * s.Hkv * s.dv, "v", x.v);
  x.o = gemmOperand(a, 3, s.B * s.S * s.Hq * s.dv, "o", x.o);
  x.lse = a.f32(4, s.B * s.Hq * s.S, "lse");
  return a.ok;
}
template <typename T>
struct BwdArrays {
  T *dout = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  float *lse = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
};
template <typename T>
inline bool readBwdArrays(Args& a, Shape& s, BwdArrays<T>& x) {
  if (!readShape(a, 9, s)) return false;
  const int64_t nq = s.B * s.S * s.Hq, nkv = s.B * s.S * s.Hkv;
  x.dout = gemmOperand(a, 0, nq * s.dv, "dout", x.dout);
  x.q = gemmOperand(a, 1, nq * s.dk, "q", x.q);
  x.k = gemmOperand(a, 2, nkv * s.dk, "k", x.k);
  x.v = gemmOperand(a, 3, nkv * s.dv, "v", x.v);
  x.o = gemmOperand(a, 4, nq * s.dv, "o", x.o);
  x.lse = a.f32(5, s.B * s.Hq * s.S, "lse");
  x.dq = a.f32(6, nq * s.dk, "dq");
  x.dk = a.f32(7, nkv * s.dk, "dk");
  x.dv = a.f32(8, nkv * s.dv, "dv");
  return a.ok;
}

}  // namespace
