// Causal scaled-dot-product attention, forward and backward, FlashAttention-2 style on the CPU.
//
// Why not sgemm: at the head dims that matter here (16 for the Llama4 debugmodel, 192/128 for MLA) a (64×64×16)
// block product is too small for BLAS (its packing and call overhead dominate), and materialising the whole
// (S×S) score matrix per head would stream S²·4 bytes through memory twice. Instead each (query block × key block)
// product runs in a register-blocked micro-kernel on L1-resident 64×64 tiles, softmax is online (running max and
// sum per query) and in base 2, fully masked key blocks are never visited, and the backward pass recomputes the
// probabilities from the saved log-sum-exp instead of storing them.
//
// Parallelism (OpenMP, the calling thread's team): forward over (batch, query head, query block), longest blocks
// first; backward over (batch, kv head), each task owning every gradient it writes (no atomics, deterministic).
//
// Layouts (row-major): q (B,S,Hq,dk), k (B,S,Hkv,dk), v (B,S,Hkv,dv), o (B,S,Hq,dv), lse (B,Hq,S).
// GQA: query head h reads kv head h / (Hq/Hkv). MLA: dk ≠ dv, Hkv = Hq.
#include <vector>
#include "common.h"

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
void mm(int64_t M, int64_t N, int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t ldb, float* C,
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
void transposeBlock(const float* src, int64_t lds, int64_t nr, int64_t nc, float* dst, int64_t ldd) {
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
  for (; c0 < nc; c0++)
    for (int64_t r = 0; r < nr; r++) dst[c0 * ldd + r] = src[r * lds + c0];
}

// Keys j0..j0+nk of kv head (b,hk), packed as Kt (dk, BK) (for Q·Kᵀ, vectorised over keys), and optionally
// Kp (BK, dkp) row-major; values as Vp (BK, dvp) or Vt (dv, BK). Padding (j ≥ nk, columns ≥ dk/dv) is zero.
void packKt(const Shape& s, const float* k, int64_t b, int64_t hk, int64_t j0, int64_t nk, float* Kt) {
  transposeBlock(k + ((b * s.S + j0) * s.Hkv + hk) * s.dk, s.Hkv * s.dk, nk, s.dk, Kt, BK);
  if (nk < BK)
    for (int64_t d = 0; d < s.dk; d++)
      for (int64_t j = nk; j < BK; j++) Kt[d * BK + j] = 0.0f;
}
// Rows are short (a head: 16–192 floats), so copy with vector moves inline rather than a memcpy call per row.
void packRows(const float* src0, int64_t rowStride, int64_t n, int64_t width, int64_t widthPad, int64_t rowsPad,
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

// ---------------------------------------------------------------------------------------------------------------
struct FwdScratch {
  Buf QT, Kpad, Vpad, St, accT;
  explicit FwdScratch(const Shape& s) : QT(s.dk * BQ), Kpad(BK * s.dk), Vpad(BK * s.dvp), St(BK * BQ), accT(s.dvp * BQ) {}
};

// One task = query block qb of head (b,h). The scores are computed transposed, Sᵀ (keys × queries) = K (scale·Q)ᵀ,
// so everything per query — running max m, running sum l, corrections — is a vector over VL queries and the
// softmax needs no horizontal reductions; the output accumulates transposed too, Oᵀ (dv × queries) += Vᵀ Pᵀ, so
// its rescaling is a vector op and its product is 64 queries wide (a full register tile even at dv = 16).
// For every key block at or left of the diagonal:
//   m' = max(m, max_j Sᵀ[j]);  Pᵀ = exp(Sᵀ − m');  l = l·e^(m−m') + Σ_j Pᵀ[j];  Oᵀ = Oᵀ·e^(m−m') + Vᵀ Pᵀ
// then o = Oᵀᵀ / l and lse = m + log l. Full key blocks read K and V in place (strided rows); the tail block and
// head dims that are not multiples of 16 go through zero-padded copies.
void fwdTask(const Shape& s, const float* q, const float* k, const float* v, float* o, float* lse, int64_t b,
             int64_t h, int64_t qb, FwdScratch& w) {
  const int64_t hk = h / s.G;
  const int64_t i0 = qb * BQ, nq = std::min(BQ, s.S - i0);
  const int64_t nq16 = roundUp(nq, 16), nqv = nq16 / VL;
  const int64_t dk = s.dk, dv = s.dv, dvp = s.dvp, dv8 = roundUp(dv, MR);
  const float qScale = s.scale * LOG2E;  // scores in base-2 units: softmax via 2^x
  float* QT = w.QT.data();
  float* St = w.St.data();
  float* accT = w.accT.data();
  transposeBlock(q + ((b * s.S + i0) * s.Hq + h) * dk, s.Hq * dk, nq, dk, QT, BQ);
  for (int64_t d = 0; d < dk; d++) {
    float* row = QT + d * BQ;
    for (int64_t r = nq; r < nq16; r++) row[r] = 0.0f;
    for (int64_t c = 0; c < nqv; c++) stv(row + VL * c, ldv(row + VL * c) * qScale);
  }
  std::memset(accT, 0, dv8 * BQ * sizeof(float));
  vf m[BQ / VL], l[BQ / VL];
  for (int c = 0; c < BQ / VL; c++) m[c] = splat(NEG_INF), l[c] = splat(0.0f);

  const int64_t kStride = s.Hkv * dk, vStride = s.Hkv * dv;
  const int64_t nkb = (i0 + nq - 1) / BK + 1;  // key blocks right of the diagonal are fully masked: skipped
  for (int64_t kb = 0; kb < nkb; kb++) {
    const int64_t j0 = kb * BK, nk = std::min(BK, s.S - j0), nk8 = roundUp(nk, MR);
    const float* kBase = k + ((b * s.S + j0) * s.Hkv + hk) * dk;
    const float* vBase = v + ((b * s.S + j0) * s.Hkv + hk) * dv;
    const float* Kb = kBase;
    int64_t kRow = kStride;
    if (nk8 != nk) {
      packRows(kBase, kStride, nk, dk, dk, nk8, w.Kpad.data());
      Kb = w.Kpad.data(), kRow = dk;
    }
    const float* Vb = vBase;
    int64_t vRow = vStride;
    if (nk8 != nk || dv8 != dv) {
      packRows(vBase, vStride, nk, dv, dvp, nk8, w.Vpad.data());
      Vb = w.Vpad.data(), vRow = dvp;
    }
    mm(nk8, nq16, dk, Kb, kRow, 1, QT, BQ, St, BQ, false);

    // Query lane i sees key row j iff j0 + j ≤ i0 + i; only blocks crossing the diagonal need the mask.
    const bool diag = j0 + nk - 1 > i0;
    vf mNew[BQ / VL];
    for (int64_t c = 0; c < nqv; c++) mNew[c] = m[c];
    for (int64_t j = 0; j < nk; j++) {
      const int32_t first = (int32_t)(j0 + j - i0);  // first visible query lane of this key
      for (int64_t c = 0; c < nqv; c++) {
        vf x = ldv(St + j * BQ + VL * c);
        if (diag) x = (iotav() + (int32_t)(VL * c)) >= first ? x : splat(NEG_INF);
        stv(St + j * BQ + VL * c, x);
        mNew[c] = vmax(mNew[c], x);
      }
    }
    vf corr[BQ / VL], sum[BQ / VL];
    for (int64_t c = 0; c < nqv; c++) corr[c] = vexp2Neg(m[c] - mNew[c]), sum[c] = splat(0.0f), m[c] = mNew[c];
    for (int64_t j = 0; j < nk; j++)
      for (int64_t c = 0; c < nqv; c++) {
        vf p = vexp2Neg(ldv(St + j * BQ + VL * c) - mNew[c]);
        stv(St + j * BQ + VL * c, p);
        sum[c] += p;
      }
    for (int64_t j = nk; j < nk8; j++) std::memset(St + j * BQ, 0, BQ * sizeof(float));
    for (int64_t c = 0; c < nqv; c++) l[c] = l[c] * corr[c] + sum[c];
    for (int64_t d = 0; d < dv8; d++)
      for (int64_t c = 0; c < nqv; c++) stv(accT + d * BQ + VL * c, ldv(accT + d * BQ + VL * c) * corr[c]);
    mm(dv8, nq16, nk8, Vb, 1, vRow, St, BQ, accT, BQ, true);  // Oᵀ += Vᵀ Pᵀ (Vᵀ read in place)
  }
  for (int64_t c = 0; c < nqv; c++) {
    const vf inv = splat(1.0f) / l[c];
    for (int64_t d = 0; d < dv; d++) stv(accT + d * BQ + VL * c, ldv(accT + d * BQ + VL * c) * inv);
  }
  transposeBlock(accT, BQ, dv, nq, o + ((b * s.S + i0) * s.Hq + h) * dv, s.Hq * dv);
  for (int64_t r = 0; r < nq; r++) {
    const float lr = l[r / VL][r % VL], mr = m[r / VL][r % VL];
    lse[(b * s.Hq + h) * s.S + i0 + r] = (mr + std::log2(lr)) * LN2;
  }
}

// P and dS of a (query block × key block) straight from (4 rows × PG vectors) register tiles, each stored once:
//   S = Q Kᵀ → P = 2^(S·scale·log2 e − lse·log2 e), masked to the visible keys;  dP = dO Vᵀ → dS = P∘(dP − Δ)·scale.
// A tile covers all 64 keys with AVX-512 (16 zmm accumulators); with AVX2 that would be 32 ymm, so the keys go in
// groups of 2 vectors (8 accumulators), each column group independent of the others.
// Rows ≥ nq (padding up to nqp) and rows that see none of the keys are zero in both.
constexpr int PG = VL == 16 ? 4 : 2;

// c[r][v] = Σ_k A[r·lda + k] · B[k·BK + VL·v] for 4 rows of A and PG vectors of B (keys), in registers.
template <int NG>
inline void rowTile(vf (&c)[4][NG], int64_t K, const float* A, int64_t lda, const float* B) {
  for (int r = 0; r < 4; r++)
    for (int v = 0; v < NG; v++) c[r][v] = vf{};
  for (int64_t k = 0; k < K; k++) {
    vf b[NG];
    for (int v = 0; v < NG; v++) b[v] = ldv(B + k * BK + VL * v);
    pinB<NG>(b);
    for (int r = 0; r < 4; r++) {
      const float a = A[r * lda + k];
      for (int v = 0; v < NG; v++) c[r][v] += a * b[v];
    }
  }
}

void probsAndGrads(int64_t nq, int64_t nqp, int64_t i0, int64_t j0, int64_t nk, int64_t dk, int64_t dv, const float* Q,
                   int64_t dkp, const float* dO, int64_t dvp, const float* Kt, const float* Vt, const float* L,
                   const float* Dl, float scale, float scale2, float* P, float* dS) {
  for (int64_t m0 = 0; m0 < nqp; m0 += 4) {
    int64_t vis[4];
    for (int r = 0; r < 4; r++) vis[r] = m0 + r < nq ? visible(i0 + m0 + r, j0, nk) : 0;
    for (int v0 = 0; v0 < BK / VL; v0 += PG) {
      vf c[4][PG];
      rowTile<PG>(c, dk, Q + m0 * dkp, dkp, Kt + VL * v0);
      for (int r = 0; r < 4; r++) {
        float* pr = P + (m0 + r) * BK + VL * v0;
        if (vis[r] <= 0) {
          for (int v = 0; v < PG; v++) stv(pr + VL * v, vf{});
          continue;
        }
        const float Li = L[m0 + r] * LOG2E;
        for (int v = 0; v < PG; v++) {
          vf p = vexp2Neg(c[r][v] * scale2 - Li);
          if (vis[r] < BK) p = (iotav() + VL * (v0 + v)) < (int32_t)vis[r] ? p : splat(0.0f);
          stv(pr + VL * v, p);
        }
      }
      rowTile<PG>(c, dv, dO + m0 * dvp, dvp, Vt + VL * v0);
      for (int r = 0; r < 4; r++) {
        float* dr = dS + (m0 + r) * BK + VL * v0;
        if (vis[r] <= 0) {
          for (int v = 0; v < PG; v++) stv(dr + VL * v, vf{});
          continue;
        }
        const float Di = Dl[m0 + r];
        const float* pr = P + (m0 + r) * BK + VL * v0;
        for (int v = 0; v < PG; v++) stv(dr + VL * v, ldv(pr + VL * v) * (c[r][v] - Di) * scale);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
struct BwdScratch {
  Buf Qh, dOh, lseh, Dh, dQh, Kt, Kp, Vt, dKa, dVa, P, dS;
  int64_t Sp;
  explicit BwdScratch(const Shape& s) {
    Sp = s.nQB * BQ;
    const int64_t G = s.G;
    Qh.alloc(G * Sp * s.dkp);
    dOh.alloc(G * Sp * s.dvp);
    lseh.alloc(G * Sp);
    Dh.alloc(G * Sp);
    dQh.alloc(G * Sp * s.dkp);
    Kt.alloc(s.dk * BK);
    Kp.alloc(BK * s.dkp);
    Vt.alloc(s.dv * BK);
    dKa.alloc(s.dkp * BK);  // dKᵀ (dk × keys)
    dVa.alloc(s.dvp * BK);  // dVᵀ (dv × keys)
    P.alloc(BQ * BK);
    dS.alloc(BQ * BK);
  }
};

// One task = kv head (b,hk) with its G query heads, so dK/dV (summed over the group) and dQ are owned by the
// task: no atomics, no per-thread copies, deterministic. Per key block (outer) and query block at or below the
// diagonal (inner), with P = exp(scale·QKᵀ − lse) recomputed and Δ_i = dO_i·O_i (P and dS come out of one fused
// register-tile pass, probsAndGrads, each stored once):
//   dVᵀ += dOᵀ P;  dP = dO Vᵀ;  dS = P∘(dP − Δ)·scale;  dKᵀ += Qᵀ dS;  dQ += dS K.
// dK and dV accumulate transposed (head dim × keys) so their products are 64 keys wide (full register tiles).
void bwdTask(const Shape& s, const float* dout, const float* q, const float* k, const float* v, const float* o,
             const float* lse, float* dq, float* dkOut, float* dvOut, int64_t b, int64_t hk, BwdScratch& w) {
  const int64_t G = s.G, Sp = w.Sp, dk = s.dk, dv = s.dv, dkp = s.dkp, dvp = s.dvp, S = s.S;
  const int64_t dk8 = roundUp(dk, MR), dv8 = roundUp(dv, MR);
  for (int64_t g = 0; g < G; g++) {
    const int64_t h = hk * G + g;
    packRows(q + (b * S * s.Hq + h) * dk, s.Hq * dk, S, dk, dkp, Sp, w.Qh.data() + g * Sp * dkp);
    packRows(dout + (b * S * s.Hq + h) * dv, s.Hq * dv, S, dv, dvp, Sp, w.dOh.data() + g * Sp * dvp);
    float* L = w.lseh.data() + g * Sp;
    float* D = w.Dh.data() + g * Sp;
    for (int64_t i = 0; i < S; i++) L[i] = lse[(b * s.Hq + h) * S + i];
    // Δ_i = dO_i·O_i. Head dims that are multiples of 16: VL rows' lane-wise products over 16 logical lanes
    // (NV16 vectors), transposed in registers and summed in lane order 0..15, give VL Δ at once (the scalar dot
    // was a 16-deep dependent chain per row; the 16-lane order keeps Δ the same for every VL).
    int64_t i = 0;
    if (dv % 16 == 0)
      for (; i < S / 16 * 16; i += VL) {
        vf t[NV16][VL];
        for (int r = 0; r < VL; r++) {
          const float* orow = o + ((b * S + i + r) * s.Hq + h) * dv;
          const float* drow = w.dOh.data() + (g * Sp + i + r) * dvp;
          for (int hh = 0; hh < NV16; hh++) {
            vf acc = ldv(drow + VL * hh) * ldv(orow + VL * hh);
            for (int64_t d = 16; d < dv; d += 16) acc += ldv(drow + d + VL * hh) * ldv(orow + d + VL * hh);
            t[hh][r] = acc;
          }
        }
        for (int hh = 0; hh < NV16; hh++) transposeV(t[hh]);
        vf sum = t[0][0];
        for (int hh = 0; hh < NV16; hh++)
          for (int r = hh == 0 ? 1 : 0; r < VL; r++) sum += t[hh][r];
        stv(D + i, sum);
      }
    for (; i < S; i++) {
      const float* orow = o + ((b * S + i) * s.Hq + h) * dv;
      const float* drow = w.dOh.data() + (g * Sp + i) * dvp;
      float acc = 0.0f;
      for (int64_t d = 0; d < dv; d++) acc += drow[d] * orow[d];
      D[i] = acc;
    }
    for (int64_t i = S; i < Sp; i++) L[i] = 0.0f, D[i] = 0.0f;
  }
  std::memset(w.dQh.data(), 0, G * Sp * dkp * sizeof(float));
  float* Kt = w.Kt.data();
  float* Kp = w.Kp.data();
  float* Vt = w.Vt.data();
  float* P = w.P.data();
  float* dS = w.dS.data();
  float* dKa = w.dKa.data();
  float* dVa = w.dVa.data();
  const float scale = s.scale, scale2 = s.scale * LOG2E;

  for (int64_t kb = 0; kb < s.nKB; kb++) {
    const int64_t j0 = kb * BK, nk = std::min(BK, S - j0);
    packKt(s, k, b, hk, j0, nk, Kt);
    packRows(k + ((b * S + j0) * s.Hkv + hk) * dk, s.Hkv * dk, nk, dk, dkp, BK, Kp);
    transposeBlock(v + ((b * S + j0) * s.Hkv + hk) * dv, s.Hkv * dv, nk, dv, Vt, BK);
    if (nk < BK)
      for (int64_t d = 0; d < dv; d++)
        for (int64_t j = nk; j < BK; j++) Vt[d * BK + j] = 0.0f;
    std::memset(dKa, 0, dkp * BK * sizeof(float));
    std::memset(dVa, 0, dvp * BK * sizeof(float));

    for (int64_t g = 0; g < G; g++) {
      const float* L = w.lseh.data() + g * Sp;
      const float* Dl = w.Dh.data() + g * Sp;
      for (int64_t qb = j0 / BQ; qb < s.nQB; qb++) {  // query blocks above the diagonal see none of these keys
        const int64_t i0 = qb * BQ, nq = std::min(BQ, S - i0), nqp = roundUp(nq, MR);
        const float* Q = w.Qh.data() + (g * Sp + i0) * dkp;
        const float* dO = w.dOh.data() + (g * Sp + i0) * dvp;
        probsAndGrads(nq, nqp, i0, j0, nk, dk, dv, Q, dkp, dO, dvp, Kt, Vt, L + i0, Dl + i0, scale, scale2, P, dS);
        mm(dv8, BK, nqp, dO, 1, dvp, P, BK, dVa, BK, true);
        mm(dk8, BK, nqp, Q, 1, dkp, dS, BK, dKa, BK, true);
        mm(nqp, dkp, BK, dS, BK, 1, Kp, dkp, w.dQh.data() + (g * Sp + i0) * dkp, dkp, true);
      }
    }
    transposeBlock(dKa, BK, dk, nk, dkOut + ((b * S + j0) * s.Hkv + hk) * dk, s.Hkv * dk);
    transposeBlock(dVa, BK, dv, nk, dvOut + ((b * S + j0) * s.Hkv + hk) * dv, s.Hkv * dv);
  }
  for (int64_t g = 0; g < G; g++) {
    const int64_t h = hk * G + g;
    for (int64_t i = 0; i < S; i++) {
      float* dst = dq + ((b * S + i) * s.Hq + h) * dk;
      const float* src = w.dQh.data() + (g * Sp + i) * dkp;
      int64_t d = 0;
      for (; d + VL <= dk; d += VL) stv(dst + d, ldv(src + d));
      for (; d < dk; d++) dst[d] = src[d];
    }
  }
}

bool readShape(Args& a, int first, Shape& s) {
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
int attnThreads(const Shape& s, int64_t tasks) {
  const int64_t work = s.B * s.Hq * (s.S * (s.S + 1) / 2) * (s.dk + s.dv);
  int t = threadsFor(work, 1 << 16);
  return (int)std::min<int64_t>(t, std::max<int64_t>(tasks, 1));
}

}  // namespace

// attentionFwd(q, k, v, o, lse, B, S, Hq, Hkv, dk, dv, scale)
static Napi::Value AttentionFwd(const Napi::CallbackInfo& info) {
  Args a(info, "attentionFwd");
  Shape s{};
  if (!readShape(a, 5, s)) return a.env.Undefined();
  const float* q = a.f32(0, s.B * s.S * s.Hq * s.dk, "q");
  const float* k = a.f32(1, s.B * s.S * s.Hkv * s.dk, "k");
  const float* v = a.f32(2, s.B * s.S * s.Hkv * s.dv, "v");
  float* o = a.f32(3, s.B * s.S * s.Hq * s.dv, "o");
  float* lse = a.f32(4, s.B * s.Hq * s.S, "lse");
  if (!a.ok || s.B * s.S * s.Hq == 0) return a.env.Undefined();
  const int64_t perQB = s.B * s.Hq, tasks = perQB * s.nQB;
#pragma omp parallel num_threads(attnThreads(s, tasks))
  {
    FwdScratch w(s);
    // Longest tasks (query blocks near the end see the most keys) first, so the dynamic schedule ends evenly.
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; t++) {
      const int64_t qb = s.nQB - 1 - t / perQB, bh = t % perQB;
      fwdTask(s, q, k, v, o, lse, bh / s.Hq, bh % s.Hq, qb, w);
    }
  }
  return a.env.Undefined();
}

// attentionBwd(dout, q, k, v, o, lse, dq, dk, dv, B, S, Hq, Hkv, dk, dv, scale)
static Napi::Value AttentionBwd(const Napi::CallbackInfo& info) {
  Args a(info, "attentionBwd");
  Shape s{};
  if (!readShape(a, 9, s)) return a.env.Undefined();
  const int64_t nq = s.B * s.S * s.Hq, nkv = s.B * s.S * s.Hkv;
  const float* dout = a.f32(0, nq * s.dv, "dout");
  const float* q = a.f32(1, nq * s.dk, "q");
  const float* k = a.f32(2, nkv * s.dk, "k");
  const float* v = a.f32(3, nkv * s.dv, "v");
  const float* o = a.f32(4, nq * s.dv, "o");
  const float* lse = a.f32(5, s.B * s.Hq * s.S, "lse");
  float* dq = a.f32(6, nq * s.dk, "dq");
  float* dkOut = a.f32(7, nkv * s.dk, "dk");
  float* dvOut = a.f32(8, nkv * s.dv, "dv");
  if (!a.ok || s.B * s.S * s.Hkv == 0) return a.env.Undefined();
  const int64_t tasks = s.B * s.Hkv;
#pragma omp parallel num_threads(attnThreads(s, tasks))
  {
    BwdScratch w(s);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; t++) bwdTask(s, dout, q, k, v, o, lse, dq, dkOut, dvOut, t / s.Hkv, t % s.Hkv, w);
  }
  return a.env.Undefined();
}

void RegisterAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionFwd", Napi::Function::New(env, AttentionFwd));
  exports.Set("attentionBwd", Napi::Function::New(env, AttentionBwd));
}
