// Causal attention on bf16 inputs, as torch's CPU flash attention runs it under bf16 compute (FSDP2 param_dtype
// bfloat16): q, k, v and dO arrive as bf16; every block product takes bf16 operands and sums in f32; the softmax
// and its statistics (running max and sum, lse, Δ = rowwise dO·O) stay f32; P and dS are rounded to bf16 where
// they enter a product, as torch rounds them before its bf16 GEMMs. o is written in bf16 (SDPA's output dtype,
// and what backward's Δ reads); dq, dk and dv in f32 (the caller un-rotates them and rounds them once for the
// projections' products).
//
// Why a second kernel rather than widening to the f32 one: at the debugmodel's head dim of 16 the f32 kernel's
// products are ~60 % of its instructions, and AVX512_BF16's vdpbf16ps does two products per lane per
// instruction. Without it (AVX2, AVX-512 without BF16) the same pair products are emulated with f32 FMAs in the
// instruction's order (high element first), so every CPU computes the same math; only the speed differs.
//
// Pair layout. C[m][n] += Σ_kp A[m][kp]·B[kp][n], where A's element is the bf16 pair along k (k = 2kp, 2kp+1) as
// one 32-bit word (broadcast), and B's element is the pair (B[2kp][n], B[2kp+1][n]) in one 32-bit lane. A
// row-major bf16 row is already A pairs along its columns; B pairs come from merging two rows lane by lane
// (pairRows) or from a 32-bit transpose of row-major pairs. So head dims must be even (every model's are: RoPE
// rotates pairs), and the bf16 arrays must start on a 4-byte boundary.
#include <vector>
#include "attention_tiles.h"
#include "bf16_simd.h"
#if defined(__AVX512BF16__) && MOE_VL == 16
#include <immintrin.h>
#define MOE_DPBF16 1
#endif

namespace {

// B pairs from two f32 rows: lane n = (bf16(lo[n]), bf16(hi[n])). With AVX512_BF16 one vcvtne2ps2bf16 rounds
// both rows (lo's 16 in the low half) and one vpermw interleaves them by `inter` (pairIndex(), which callers load
// once outside their loops: reloaded per call it was among the hottest instructions); the integer rounding costs
// ~8× that.
inline vu pairIndex() {
#ifdef MOE_DPBF16
  alignas(64) static const uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  return (vu)_mm512_load_si512(kInterleave);
#else
  return vu{};
#endif
}
inline vu pairRows(vf lo, vf hi, vu inter) {
#ifdef MOE_DPBF16
  const __m512i both = (__m512i)_mm512_cvtne2ps_pbh((__m512)hi, (__m512)lo);
  return (vu)_mm512_permutexvar_epi16((__m512i)inter, both);
#else
  (void)inter;
  return roundBf16(lo) | (roundBf16(hi) << 16);
#endif
}
// 2·VL f32 (a then b) → 2·VL bf16 in order at dst.
inline void storeBf16(uint16_t* dst, vf a, vf b) {
#ifdef MOE_DPBF16
  const __m512i both = (__m512i)_mm512_cvtne2ps_pbh((__m512)b, (__m512)a);
  __builtin_memcpy(dst, &both, sizeof both);
#else
  const vh ra = __builtin_convertvector(roundBf16(a), vh), rb = __builtin_convertvector(roundBf16(b), vh);
  __builtin_memcpy(dst, &ra, sizeof ra);
  __builtin_memcpy(dst + VL, &rb, sizeof rb);
#endif
}

// A B-operand vector of pairs, in the form the product wants it.
struct BPair {
#ifdef MOE_DPBF16
  __m512bh w;
#else
  vf lo, hi;
#endif
};
inline BPair loadB(const uint32_t* p) {
  const vu w = ldu(p);
#ifdef MOE_DPBF16
  return {(__m512bh)w};
#else
  return {asF(w << 16), asF(w & 0xffff0000u)};
#endif
}
// c + a·b over each lane's pair: vdpbf16ps, or its f32 emulation (high product first, as the instruction).
inline vf dp(vf c, uint32_t a, const BPair& b) {
#ifdef MOE_DPBF16
  return (vf)_mm512_dpbf16_ps((__m512)c, (__m512bh)_mm512_set1_epi32((int)a), b.w);
#else
  uint32_t lo = a << 16, hi = a & 0xffff0000u;
  float alo, ahi;
  std::memcpy(&alo, &lo, 4);
  std::memcpy(&ahi, &hi, 4);
  c = c + ahi * b.hi;
  return c + alo * b.lo;
#endif
}

// C tile (R rows × VL·NV cols) (+)= Σ_kp A[r·ars + kp] · B[kp·ldb + col] in pairs; as tile() in attention_tiles.h.
template <int R, int NV>
inline void tileP(int64_t KP, const uint32_t* A, int64_t ars, const uint32_t* B, int64_t ldb, float* C, int64_t ldc,
                  bool accumulate) {
  vf c[R][NV];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) c[r][v] = accumulate ? ldv(C + r * ldc + VL * v) : vf{};
  for (int64_t kp = 0; kp < KP; kp++) {
    BPair b[NV];
    for (int v = 0; v < NV; v++) b[v] = loadB(B + kp * ldb + VL * v);
    const uint32_t* ak = A + kp;
    for (int r = 0; r < R; r++) {
      const uint32_t a = ak[r * ars];
      for (int v = 0; v < NV; v++) c[r][v] = dp(c[r][v], a, b[v]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) stv(C + r * ldc + VL * v, c[r][v]);
}

// C (M,N) (+)= A (M, 2·KP) · B (2·KP, N) in pairs. M % 8 == 0, N % 16 == 0 (callers pad with zeros).
void mmP(int64_t M, int64_t N, int64_t KP, const uint32_t* A, int64_t ars, const uint32_t* B, int64_t ldb, float* C,
         int64_t ldc, bool accumulate) {
#if MOE_VL < 16
  for (int64_t n0 = 0; n0 < N; n0 += 2 * VL) {
    const int64_t nv = std::min<int64_t>(2, (N - n0) / VL);
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
      const uint32_t* Am = A + m0 * ars;
      float* Cm = C + m0 * ldc + n0;
      if (nv == 1) {
        tileP<4, 1>(KP, Am, ars, B + n0, ldb, Cm, ldc, accumulate);
        tileP<4, 1>(KP, Am + 4 * ars, ars, B + n0, ldb, Cm + 4 * ldc, ldc, accumulate);
      } else {
        tileP<4, 2>(KP, Am, ars, B + n0, ldb, Cm, ldc, accumulate);
        tileP<4, 2>(KP, Am + 4 * ars, ars, B + n0, ldb, Cm + 4 * ldc, ldc, accumulate);
      }
    }
  }
#else
  if (N == 16 && M % 16 == 0) {
    // One vector wide (dQ at head dim 16): 16 rows per tile, so 16 sums are in flight instead of 8.
    for (int64_t m0 = 0; m0 < M; m0 += 16) tileP<16, 1>(KP, A + m0 * ars, ars, B, ldb, C + m0 * ldc, ldc, accumulate);
    return;
  }
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    const int64_t nv = std::min<int64_t>(4, (N - n0) / 16);
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
      const uint32_t* Am = A + m0 * ars;
      const uint32_t* Bn = B + n0;
      float* Cm = C + m0 * ldc + n0;
      switch (nv) {
        case 1:
          tileP<8, 1>(KP, Am, ars, Bn, ldb, Cm, ldc, accumulate);
          break;
        case 2:
          tileP<8, 2>(KP, Am, ars, Bn, ldb, Cm, ldc, accumulate);
          break;
        case 3:
          tileP<4, 3>(KP, Am, ars, Bn, ldb, Cm, ldc, accumulate);
          tileP<4, 3>(KP, Am + 4 * ars, ars, Bn, ldb, Cm + 4 * ldc, ldc, accumulate);
          break;
        default:
          tileP<4, 4>(KP, Am, ars, Bn, ldb, Cm, ldc, accumulate);
          tileP<4, 4>(KP, Am + 4 * ars, ars, Bn, ldb, Cm + 4 * ldc, ldc, accumulate);
          break;
      }
    }
  }
#endif
}

// 32-bit words as floats for the bit-exact moves of transposeBlock / packRows (vector and scalar moves only).
inline const float* F(const uint32_t* p) { return reinterpret_cast<const float*>(p); }
inline float* F(uint32_t* p) { return reinterpret_cast<float*>(p); }
inline const uint32_t* W(const uint16_t* p) { return reinterpret_cast<const uint32_t*>(p); }

// Pairs along rows: out[rp·ldo + c] = (src[2rp][c], src[2rp+1][c]) for c < nc, zero for c in [nc, ncPad) and for
// rows ≥ nr (src rows at stride lds, bf16).
void pairAlongRows(const uint16_t* src, int64_t lds, int64_t nr, int64_t nc, int64_t ncPad, int64_t nrPad,
                   uint32_t* out, int64_t ldo) {
  for (int64_t rp = 0; rp < nrPad / 2; rp++) {
    uint32_t* o = out + rp * ldo;
    const int64_t r0 = 2 * rp;
    for (int64_t c = 0; c < nc; c++) {
      const uint32_t lo = r0 < nr ? src[r0 * lds + c] : 0u;
      const uint32_t hi = r0 + 1 < nr ? src[(r0 + 1) * lds + c] : 0u;
      o[c] = lo | (hi << 16);
    }
    for (int64_t c = nc; c < ncPad; c++) o[c] = 0u;
  }
}

// Pairs along rows of a transposed block: out[c·ldo + rp] = (src[2rp][c], src[2rp+1][c]) for c < nc (then zero
// rows up to ncPad), rp < nrPad/2 (rows ≥ nr read as zero). Makes Vᵀ, Qᵀ and dOᵀ A operands whose k runs along
// the sequence. The full row pairs go without a bounds test per element; the tail and padding after.
void pairAlongRowsT(const uint16_t* src, int64_t lds, int64_t nr, int64_t nc, int64_t ncPad, int64_t nrPad,
                    uint32_t* out, int64_t ldo) {
  const int64_t full = nr / 2;
  int64_t rp0 = 0;
  // VL row pairs × VL columns at a time: each pair row's words built by widening loads, then a register transpose
  // (the scalar loop below alone was ~1.5 % of the bf16 backward).
  for (; rp0 + VL <= full; rp0 += VL) {
    int64_t c0 = 0;
    for (; c0 + VL <= nc; c0 += VL) {
      vf t[VL];
      for (int i = 0; i < VL; i++) {
        const uint16_t* lo = src + 2 * (rp0 + i) * lds + c0;
        t[i] = asF((asU(ldBf16(lo)) >> 16) | asU(ldBf16(lo + lds)));
      }
      transposeV(t);
      for (int c = 0; c < VL; c++) stv(F(out + (c0 + c) * ldo + rp0), t[c]);
    }
    for (int64_t rp = rp0; rp < rp0 + VL; rp++) {
      const uint16_t* lo = src + 2 * rp * lds;
      const uint16_t* hi = lo + lds;
      for (int64_t c = c0; c < nc; c++) out[c * ldo + rp] = (uint32_t)lo[c] | ((uint32_t)hi[c] << 16);
    }
  }
  for (int64_t rp = rp0; rp < full; rp++) {
    const uint16_t* lo = src + 2 * rp * lds;
    const uint16_t* hi = lo + lds;
    for (int64_t c = 0; c < nc; c++) out[c * ldo + rp] = (uint32_t)lo[c] | ((uint32_t)hi[c] << 16);
  }
  for (int64_t c = 0; c < ncPad; c++) {
    uint32_t* o = out + c * ldo;
    int64_t rp = c < nc ? full : 0;
    if (c < nc && nr % 2 == 1) o[rp++] = src[(nr - 1) * lds + c];
    for (; rp < nrPad / 2; rp++) o[rp] = 0u;
  }
}

// A scratch that persists per thread (the per-call pair layouts of V would otherwise be a fresh mapping, and
// page faults, every call).
uint32_t* threadScratch(size_t words) {
  thread_local std::vector<uint32_t> buf;
  if (buf.size() < words) buf.resize(words);
  return buf.data();
}

// ---------------------------------------------------------------------------------------------------------------
struct FwdScratch16 {
  Buf QTp, Kpad, St, Pp, accT, Ot;
  explicit FwdScratch16(const Shape& s)
      : QTp(s.dk / 2 * BQ), Kpad(BK * s.dk / 2), St(BK * BQ), Pp(BK / 2 * BQ), accT(s.dvp * BQ), Ot(BQ * s.dv) {}
};

// As fwdTask (attention.cc): Sᵀ = K Qᵀ (pairs along the head dim: K rows in place, Qᵀ a 32-bit transpose of the
// query rows), scaled after the product (rounding q·scale would change the inputs); Oᵀ += Vᵀ Pᵀ with Vᵀ pairs
// prepared once per call (Vtp) and Pᵀ pairs merged from two key rows of f32 probabilities.
void fwdTask16(const Shape& s, const uint16_t* q, const uint16_t* k, const uint32_t* Vtp, uint16_t* o, float* lse,
               int64_t b, int64_t h, int64_t qb, FwdScratch16& w) {
  const int64_t hk = h / s.G;
  const int64_t i0 = qb * BQ, nq = std::min(BQ, s.S - i0);
  const int64_t nq16 = roundUp(nq, 16), nqv = nq16 / VL;
  const int64_t dk2 = s.dk / 2, dv = s.dv, dv8 = roundUp(dv, MR);
  const vf qScale = splat(s.scale * LOG2E);
  uint32_t* QTp = reinterpret_cast<uint32_t*>(w.QTp.data());
  uint32_t* Pp = reinterpret_cast<uint32_t*>(w.Pp.data());
  float* St = w.St.data();
  float* accT = w.accT.data();
  transposeBlock(F(W(q + ((b * s.S + i0) * s.Hq + h) * s.dk)), s.Hq * dk2, nq, dk2, F(QTp), BQ);
  for (int64_t d = 0; d < dk2; d++)
    for (int64_t r = nq; r < nq16; r++) QTp[d * BQ + r] = 0u;
  std::memset(accT, 0, dv8 * BQ * sizeof(float));
  vf m[BQ / VL], l[BQ / VL];
  for (int c = 0; c < BQ / VL; c++) m[c] = splat(NEG_INF), l[c] = splat(0.0f);

  const int64_t kRowW = s.Hkv * dk2;
  const int64_t nkb = (i0 + nq - 1) / BK + 1;
  for (int64_t kb = 0; kb < nkb; kb++) {
    const int64_t j0 = kb * BK, nk = std::min(BK, s.S - j0), nk8 = roundUp(nk, MR);
    const uint32_t* Kb = W(k + ((b * s.S + j0) * s.Hkv + hk) * s.dk);
    int64_t kRow = kRowW;
    if (nk8 != nk) {
      packRows(F(Kb), kRowW, nk, dk2, dk2, nk8, w.Kpad.data());
      Kb = reinterpret_cast<const uint32_t*>(w.Kpad.data()), kRow = dk2;
    }
    mmP(nk8, nq16, dk2, Kb, kRow, QTp, BQ, St, BQ, false);

    // The running max from the raw products (scaling by a positive factor keeps their order, so max(x)·scale =
    // max(x·scale) exactly), and the probabilities straight from them: St is read twice and never rewritten.
    // Keys after a query (diagonal block only) and padding keys (j ≥ nk) take p = 0 after the exp.
    const bool diag = j0 + nk - 1 > i0;
    vf mNew[BQ / VL];
    for (int64_t c = 0; c < nqv; c++) mNew[c] = splat(NEG_INF);
    for (int64_t j = 0; j < nk; j++) {
      const int32_t first = (int32_t)(j0 + j - i0);
      for (int64_t c = 0; c < nqv; c++) {
        vf x = ldv(St + j * BQ + VL * c);
        if (diag) x = (iotav() + (int32_t)(VL * c)) >= first ? x : splat(NEG_INF);
        mNew[c] = vmax(mNew[c], x);
      }
    }
    vf corr[BQ / VL], sum[BQ / VL];
    for (int64_t c = 0; c < nqv; c++) {
      mNew[c] = vmax(m[c], mNew[c] * qScale);
      corr[c] = vexp2Neg(m[c] - mNew[c]), sum[c] = splat(0.0f), m[c] = mNew[c];
    }
    // Probabilities in f32 for the row sums (torch sums before it rounds), bf16 pairs of key rows for the product.
    const vu inter = pairIndex();
    for (int64_t jp = 0; jp < nk8 / 2; jp++) {
      const int64_t j = 2 * jp;
      const int32_t first = (int32_t)(j0 + j - i0);
      for (int64_t c = 0; c < nqv; c++) {
        vf p0 = vexp2NegFinite(ldv(St + j * BQ + VL * c) * qScale - mNew[c]);
        vf p1 = vexp2NegFinite(ldv(St + (j + 1) * BQ + VL * c) * qScale - mNew[c]);
        if (diag || j + 2 > nk) {
          const vi lane = iotav() + (int32_t)(VL * c);
          p0 = lane >= first && j < nk ? p0 : vf{};
          p1 = lane >= first + 1 && j + 1 < nk ? p1 : vf{};
        }
        sum[c] += p0;
        sum[c] += p1;
        stu(Pp + jp * BQ + VL * c, pairRows(p0, p1, inter));
      }
    }
    for (int64_t c = 0; c < nqv; c++) l[c] = l[c] * corr[c] + sum[c];
    for (int64_t d = 0; d < dv8; d++)
      for (int64_t c = 0; c < nqv; c++) stv(accT + d * BQ + VL * c, ldv(accT + d * BQ + VL * c) * corr[c]);
    const uint32_t* Vb = Vtp + ((b * s.Hkv + hk) * s.nKB + kb) * dv8 * (BK / 2);
    mmP(dv8, nq16, nk8 / 2, Vb, BK / 2, Pp, BQ, accT, BQ, true);
  }
  for (int64_t c = 0; c < nqv; c++) {
    const vf inv = splat(1.0f) / l[c];
    for (int64_t d = 0; d < dv; d++) stv(accT + d * BQ + VL * c, ldv(accT + d * BQ + VL * c) * inv);
  }
  float* Ot = w.Ot.data();
  transposeBlock(accT, BQ, dv, nq, Ot, dv);
  for (int64_t r = 0; r < nq; r++) {
    uint16_t* orow = o + ((b * s.S + i0 + r) * s.Hq + h) * dv;
    int64_t d = 0;
    for (; d + VL <= dv; d += VL) storeAs(orow + d, ldv(Ot + r * dv + d));
    for (; d < dv; d++) storeAs(orow + d, Ot[r * dv + d]);
    const float lr = l[r / VL][r % VL], mr = m[r / VL][r % VL];
    lse[(b * s.Hq + h) * s.S + i0 + r] = (mr + std::log2(lr)) * LN2;
  }
}

// c[r][v] = Σ_kp A[r·lda + kp] · B[kp·BK + VL·v] in pairs, 4 rows × NG vectors of keys (as rowTile).
// The sums run in a local array, copied out once: the caller's array is read in loops GCC does not unroll, so it
// lives in memory, and accumulating into it directly stored all 16 accumulators every k step.
template <int NG>
inline void rowTileP(vf (&out)[4][NG], int64_t KP, const uint32_t* A, int64_t lda, const uint32_t* B) {
  vf c[4][NG];
  for (int r = 0; r < 4; r++)
    for (int v = 0; v < NG; v++) c[r][v] = vf{};
  for (int64_t kp = 0; kp < KP; kp++) {
    BPair b[NG];
    for (int v = 0; v < NG; v++) b[v] = loadB(B + kp * BK + VL * v);
    for (int r = 0; r < 4; r++) {
      const uint32_t a = A[r * lda + kp];
      for (int v = 0; v < NG; v++) c[r][v] = dp(c[r][v], a, b[v]);
    }
  }
  for (int r = 0; r < 4; r++)
    for (int v = 0; v < NG; v++) out[r][v] = c[r][v];
}

// P and dS of a (query block × key block) as probsAndGrads with pair products, rounded to bf16 straight from the
// register tiles in the layouts their products read: Pp and dSp as pairs of query rows (B operands of dVᵀ and
// dKᵀ; a group of 4 rows makes 2 pair rows), dS16 as bf16 rows (A operand of dQ). P in f32 (P32) is only the
// scratch dS is made from, dS32 the one its two bf16 layouts are made from. Rows ≥ nq and rows that see none of the keys are zero.
// Vectors v0 .. v0+NG of keys for 4 query rows from m0 (the body of probsAndGrads16 below).
template <int NG>
inline void probsAndGradsGroup(int64_t m0, int v0, const int64_t (&vis)[4], int64_t dk2, int64_t dv2, const uint32_t* Q,
                               int64_t ldq, const uint32_t* dO, int64_t ldo, const uint32_t* KtP, const uint32_t* VtP,
                               const float* L, const float* Dl, float scale, float scale2, float* P32, float* dS32,
                               uint32_t* Pp, uint32_t* dSp, uint16_t* dS16, vu inter) {
  vf c[4][NG];
  rowTileP<NG>(c, dk2, Q + m0 * ldq, ldq, KtP + VL * v0);
  for (int r = 0; r < 4; r++) {
    const float Li = L[m0 + r] * LOG2E;
    for (int v = 0; v < NG; v++) {
      vf p = vf{};
      if (vis[r] > 0) {
        p = vexp2NegFinite(c[r][v] * scale2 - Li);
        if (vis[r] < BK) p = (iotav() + VL * (v0 + v)) < (int32_t)vis[r] ? p : splat(0.0f);
      }
      stv(P32 + r * BK + VL * (v0 + v), p);
    }
  }
  // Pairs and rows from the stored f32 values, never written back into c: an accumulator array that is
  // assigned after its tile stops being registers (GCC then spilled all 16 every k step).
  for (int v = 0; v < NG; v++) {
    const float* pv = P32 + VL * (v0 + v);
    stu(Pp + (m0 / 2) * BK + VL * (v0 + v), pairRows(ldv(pv), ldv(pv + BK), inter));
    stu(Pp + (m0 / 2 + 1) * BK + VL * (v0 + v), pairRows(ldv(pv + 2 * BK), ldv(pv + 3 * BK), inter));
  }
  rowTileP<NG>(c, dv2, dO + m0 * ldo, ldo, VtP + VL * v0);
  for (int r = 0; r < 4; r++) {
    const float Di = Dl[m0 + r];
    for (int v = 0; v < NG; v++)
      stv(dS32 + r * BK + VL * (v0 + v), ldv(P32 + r * BK + VL * (v0 + v)) * (c[r][v] - Di) * scale);
    for (int v = 0; v < NG; v += 2)
      storeBf16(dS16 + (m0 + r) * BK + VL * (v0 + v), ldv(dS32 + r * BK + VL * (v0 + v)),
                ldv(dS32 + r * BK + VL * (v0 + v + 1)));
  }
  for (int v = 0; v < NG; v++) {
    const float* dv = dS32 + VL * (v0 + v);
    stu(dSp + (m0 / 2) * BK + VL * (v0 + v), pairRows(ldv(dv), ldv(dv + BK), inter));
    stu(dSp + (m0 / 2 + 1) * BK + VL * (v0 + v), pairRows(ldv(dv + 2 * BK), ldv(dv + 3 * BK), inter));
  }
}

// P and dS of 4 query rows from m0 at keys [VL·v0, VL·v1) that none of the rows sees: zero in every layout the
// products read (the probabilities and their gradients of masked keys are exactly 0).
inline void maskedGroup(int64_t m0, int v0, int v1, uint32_t* Pp, uint32_t* dSp, uint16_t* dS16) {
  const int64_t n = VL * (v1 - v0);
  for (int rp = 0; rp < 2; rp++) {
    std::memset(Pp + (m0 / 2 + rp) * BK + VL * v0, 0, n * sizeof(uint32_t));
    std::memset(dSp + (m0 / 2 + rp) * BK + VL * v0, 0, n * sizeof(uint32_t));
  }
  for (int r = 0; r < 4; r++) std::memset(dS16 + (m0 + r) * BK + VL * v0, 0, n * sizeof(uint16_t));
}

void probsAndGrads16(int64_t nq, int64_t nqp, int64_t i0, int64_t j0, int64_t nk, int64_t dk2, int64_t dv2,
                     const uint32_t* Q, int64_t ldq, const uint32_t* dO, int64_t ldo, const uint32_t* KtP,
                     const uint32_t* VtP, const float* L, const float* Dl, float scale, float scale2, float* P32,
                     float* dS32, uint32_t* Pp, uint32_t* dSp, uint16_t* dS16) {
  static_assert(PG % 2 == 0, "dS rows are stored two vectors at a time");
  const vu inter = pairIndex();
  for (int64_t m0 = 0; m0 < nqp; m0 += 4) {
    int64_t vis[4];
    for (int r = 0; r < 4; r++) vis[r] = m0 + r < nq ? visible(i0 + m0 + r, j0, nk) : 0;
    // Key vectors past every row's last visible key (the diagonal block's upper right) are masked for all four
    // rows: skipped in pairs of vectors (dS16 is stored two at a time), their P and dS written as zeros.
    const int64_t seen = std::max(std::max(vis[0], vis[1]), std::max(vis[2], vis[3]));
    const int live = (int)std::min<int64_t>(BK / VL, (seen + 2 * VL - 1) / (2 * VL) * 2);
    for (int v0 = 0; v0 < BK / VL; v0 += PG) {
      const int n = std::min(PG, std::max(0, live - v0));
      if (n == PG)
        probsAndGradsGroup<PG>(m0, v0, vis, dk2, dv2, Q, ldq, dO, ldo, KtP, VtP, L, Dl, scale, scale2, P32, dS32, Pp,
                               dSp, dS16, inter);
#if MOE_VL == 16
      else if (n == 2)
        probsAndGradsGroup<2>(m0, v0, vis, dk2, dv2, Q, ldq, dO, ldo, KtP, VtP, L, Dl, scale, scale2, P32, dS32, Pp,
                              dSp, dS16, inter);
#endif
      if (n < PG) maskedGroup(m0, v0 + n, v0 + PG, Pp, dSp, dS16);
    }
  }
}

struct BwdScratch16 {
  Buf Qh, dOh, QtP, dOtP, lseh, Dh, dQh, KtP, VtP, KP, dKa, dVa, P32, dS32, Pp, dSp, dS16;
  int64_t Sp;
  explicit BwdScratch16(const Shape& s) {
    Sp = s.nQB * BQ;
    const int64_t G = s.G, dk8 = roundUp(s.dk, MR), dv8 = roundUp(s.dv, MR);
    Qh.alloc(G * Sp * s.dkp / 2);
    dOh.alloc(G * Sp * s.dvp / 2);
    QtP.alloc(G * dk8 * Sp / 2);
    dOtP.alloc(G * dv8 * Sp / 2);
    lseh.alloc(G * Sp);
    Dh.alloc(G * Sp);
    dQh.alloc(G * Sp * s.dkp);
    KtP.alloc(s.dkp / 2 * BK);
    VtP.alloc(s.dvp / 2 * BK);
    KP.alloc(BK / 2 * s.dkp);
    dKa.alloc(s.dkp * BK);
    dVa.alloc(s.dvp * BK);
    P32.alloc(4 * BK);
    dS32.alloc(4 * BK);
    Pp.alloc(BQ / 2 * BK);
    dSp.alloc(BQ / 2 * BK);
    dS16.alloc(BQ * BK / 2);
  }
};
inline uint32_t* U(Buf& b) { return reinterpret_cast<uint32_t*>(b.data()); }

// As bwdTask (attention.cc), one task per kv head (b,hk) with its G query heads, every product in pairs:
//   S = Q Kᵀ (Q rows, Kᵀ pairs);  dP = dO Vᵀ (dO rows, Vᵀ pairs);  P, dS in f32, then rounded:
//   dVᵀ += dOᵀ P and dKᵀ += Qᵀ dS (Qᵀ/dOᵀ pairs along the sequence, made once per head; P/dS pairs of query rows);
//   dQ += dS K (dS rows rounded in place order, K pairs of key rows).
void bwdTask16(const Shape& s, const uint16_t* dout, const uint16_t* q, const uint16_t* k, const uint16_t* v,
               const uint16_t* o, const float* lse, float* dq, float* dkOut, float* dvOut, int64_t b, int64_t hk,
               BwdScratch16& w) {
  const int64_t G = s.G, Sp = w.Sp, dk = s.dk, dv = s.dv, dkp = s.dkp, dvp = s.dvp, S = s.S;
  const int64_t dk8 = roundUp(dk, MR), dv8 = roundUp(dv, MR), dk2 = dk / 2, dv2 = dv / 2;
  for (int64_t g = 0; g < G; g++) {
    const int64_t h = hk * G + g;
    const uint16_t* qh = q + (b * S * s.Hq + h) * dk;
    const uint16_t* doh = dout + (b * S * s.Hq + h) * dv;
    packRows(F(W(qh)), s.Hq * dk2, S, dk2, dkp / 2, Sp, w.Qh.data() + g * Sp * dkp / 2);
    packRows(F(W(doh)), s.Hq * dv2, S, dv2, dvp / 2, Sp, w.dOh.data() + g * Sp * dvp / 2);
    pairAlongRowsT(qh, s.Hq * dk, S, dk, dk8, Sp, U(w.QtP) + g * dk8 * Sp / 2, Sp / 2);
    pairAlongRowsT(doh, s.Hq * dv, S, dv, dv8, Sp, U(w.dOtP) + g * dv8 * Sp / 2, Sp / 2);
    float* L = w.lseh.data() + g * Sp;
    float* D = w.Dh.data() + g * Sp;
    // Δ_i = dO_i·O_i: lane-wise products over the head dim's VL-wide chunks, then the lanes in order (a scalar
    // dot of widened bf16 was a dependent chain per row).
    const auto laneProducts = [&](int64_t i) {
      const uint16_t* orow = o + ((b * S + i) * s.Hq + h) * dv;
      const uint16_t* drow = doh + i * s.Hq * dv;
      vf p = ldBf16(drow) * ldBf16(orow);
      for (int64_t d = VL; d + VL <= dv; d += VL) p += ldBf16(drow + d) * ldBf16(orow + d);
      return p;
    };
    int64_t i = 0;
    // VL rows at a time: their lane products transposed, so the lanes are summed (in order 0..VL−1, as the
    // scalar loop below) by vector adds; a per-row scalar sum was a dependent chain of VL adds.
    if (dv % VL == 0)
      for (; i + VL <= S; i += VL) {
        vf t[VL];
        for (int r = 0; r < VL; r++) t[r] = laneProducts(i + r);
        transposeV(t);
        vf acc = t[0];
        for (int l = 1; l < VL; l++) acc += t[l];
        stv(D + i, acc);
      }
    for (; i < S; i++) {
      int64_t d = 0;
      float acc = 0.0f;
      if (dv >= VL) {
        const vf p = laneProducts(i);
        for (int l = 0; l < VL; l++) acc += p[l];
        d = dv / VL * VL;
      }
      const uint16_t* orow = o + ((b * S + i) * s.Hq + h) * dv;
      const uint16_t* drow = doh + i * s.Hq * dv;
      for (; d < dv; d++) acc += bf16ToF(drow[d]) * bf16ToF(orow[d]);
      D[i] = acc;
    }
    for (int64_t j = 0; j < S; j++) L[j] = lse[(b * s.Hq + h) * S + j];
    for (int64_t i = S; i < Sp; i++) L[i] = 0.0f, D[i] = 0.0f;
  }
  std::memset(w.dQh.data(), 0, G * Sp * dkp * sizeof(float));
  uint32_t *KtP = U(w.KtP), *VtP = U(w.VtP), *KP = U(w.KP), *Pp = U(w.Pp), *dSp = U(w.dSp), *dS16 = U(w.dS16);
  float* dKa = w.dKa.data();
  float* dVa = w.dVa.data();
  const float scale = s.scale, scale2 = s.scale * LOG2E;

  for (int64_t kb = 0; kb < s.nKB; kb++) {
    const int64_t j0 = kb * BK, nk = std::min(BK, S - j0);
    const uint16_t* kRows = k + ((b * S + j0) * s.Hkv + hk) * dk;
    const uint16_t* vRows = v + ((b * S + j0) * s.Hkv + hk) * dv;
    transposeBlock(F(W(kRows)), s.Hkv * dk2, nk, dk2, F(KtP), BK);
    transposeBlock(F(W(vRows)), s.Hkv * dv2, nk, dv2, F(VtP), BK);
    if (nk < BK) {
      for (int64_t d = 0; d < dk2; d++)
        for (int64_t j = nk; j < BK; j++) KtP[d * BK + j] = 0u;
      for (int64_t d = 0; d < dv2; d++)
        for (int64_t j = nk; j < BK; j++) VtP[d * BK + j] = 0u;
    }
    pairAlongRows(kRows, s.Hkv * dk, nk, dk, dkp, BK, KP, dkp);
    std::memset(dKa, 0, dkp * BK * sizeof(float));
    std::memset(dVa, 0, dvp * BK * sizeof(float));

    for (int64_t g = 0; g < G; g++) {
      const float* L = w.lseh.data() + g * Sp;
      const float* Dl = w.Dh.data() + g * Sp;
      const uint32_t* QtP = U(w.QtP) + g * dk8 * Sp / 2;
      const uint32_t* dOtP = U(w.dOtP) + g * dv8 * Sp / 2;
      for (int64_t qb = j0 / BQ; qb < s.nQB; qb++) {
        const int64_t i0 = qb * BQ, nq = std::min(BQ, S - i0), nqp = roundUp(nq, MR);
        const uint32_t* Q = U(w.Qh) + (g * Sp + i0) * dkp / 2;
        const uint32_t* dO = U(w.dOh) + (g * Sp + i0) * dvp / 2;
        probsAndGrads16(nq, nqp, i0, j0, nk, dk2, dv2, Q, dkp / 2, dO, dvp / 2, KtP, VtP, L + i0, Dl + i0, scale,
                        scale2, w.P32.data(), w.dS32.data(), Pp, dSp, reinterpret_cast<uint16_t*>(dS16));
        mmP(dv8, BK, nqp / 2, dOtP + i0 / 2, Sp / 2, Pp, BK, dVa, BK, true);
        mmP(dk8, BK, nqp / 2, QtP + i0 / 2, Sp / 2, dSp, BK, dKa, BK, true);
        mmP(nqp, dkp, BK / 2, dS16, BK / 2, KP, dkp, w.dQh.data() + (g * Sp + i0) * dkp, dkp, true);
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

// Even head dims and 4-byte-aligned bf16 arrays (the pair layout reads two bf16 as one word).
bool checkPairs(Args& a, const Shape& s, std::initializer_list<std::pair<const uint16_t*, const char*>> arrays) {
  if (!a.ok) return false;
  if (s.dk % 2 != 0 || s.dv % 2 != 0) {
    a.fail("head dims dk = " + std::to_string(s.dk) + ", dv = " + std::to_string(s.dv) +
           " must be even (bf16 attention multiplies pairs of bf16; use the f32 attention for odd head dims)");
    return false;
  }
  for (const auto& [p, name] : arrays)
    if (reinterpret_cast<uintptr_t>(p) % 4 != 0) {
      a.fail(std::string(name) + " must start on a 4-byte boundary (a Uint16Array view at an even element offset)");
      return false;
    }
  return true;
}

}  // namespace

// attentionFwdBf16(q, k, v, o, lse, B, S, Hq, Hkv, dk, dv, scale): q, k, v, o Uint16Array (bf16 bits), lse f32.
static Napi::Value AttentionFwdBf16(const Napi::CallbackInfo& info) {
  Args a(info, "attentionFwdBf16");
  Shape s{};
  FwdArrays<uint16_t> x;
  if (!readFwdArrays(a, s, x)) return a.env.Undefined();
  const uint16_t *q = x.q, *k = x.k, *v = x.v;
  uint16_t* o = x.o;
  float* lse = x.lse;
  if (!checkPairs(a, s, {{q, "q"}, {k, "k"}, {v, "v"}, {o, "o"}}) || s.B * s.S * s.Hq == 0) return a.env.Undefined();
  // Vᵀ pairs per (b, kv head, key block): rows d < dv8, 32 key pairs each, zero beyond the sequence and dv.
  const int64_t dv8 = roundUp(s.dv, MR), blockW = dv8 * (BK / 2), heads = s.B * s.Hkv;
  uint32_t* Vtp = threadScratch((size_t)(heads * s.nKB * blockW));
  const auto pairV = [&] {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < heads * s.nKB; t++) {
      const int64_t bh = t / s.nKB, kb = t % s.nKB, b = bh / s.Hkv, hk = bh % s.Hkv;
      const int64_t j0 = kb * BK, nk = std::min(BK, s.S - j0);
      pairAlongRowsT(v + ((b * s.S + j0) * s.Hkv + hk) * s.dv, s.Hkv * s.dv, nk, s.dv, dv8, BK, Vtp + t * blockW,
                     BK / 2);
    }
  };
  forQueryBlocks<FwdScratch16>(s, pairV, [&](int64_t b, int64_t h, int64_t qb, FwdScratch16& w) {
    fwdTask16(s, q, k, Vtp, o, lse, b, h, qb, w);
  });
  return a.env.Undefined();
}

// attentionBwdBf16(dout, q, k, v, o, lse, dq, dk, dv, B, S, Hq, Hkv, dk, dv, scale): dout, q, k, v, o bf16;
// lse, dq, dk, dv f32.
static Napi::Value AttentionBwdBf16(const Napi::CallbackInfo& info) {
  Args a(info, "attentionBwdBf16");
  Shape s{};
  BwdArrays<uint16_t> x;
  if (!readBwdArrays(a, s, x)) return a.env.Undefined();
  const uint16_t *dout = x.dout, *q = x.q, *k = x.k, *v = x.v, *o = x.o;
  const float* lse = x.lse;
  float *dq = x.dq, *dkOut = x.dk, *dvOut = x.dv;
  if (!checkPairs(a, s, {{dout, "dout"}, {q, "q"}, {k, "k"}, {v, "v"}, {o, "o"}}) || s.B * s.S * s.Hkv == 0)
    return a.env.Undefined();
  forKvHeads<BwdScratch16>(s, [&](int64_t b, int64_t hk, BwdScratch16& w) {
    bwdTask16(s, dout, q, k, v, o, lse, dq, dkOut, dvOut, b, hk, w);
  });
  return a.env.Undefined();
}

void RegisterAttentionBf16(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionFwdBf16", Napi::Function::New(env, AttentionFwdBf16));
  exports.Set("attentionBwdBf16", Napi::Function::New(env, AttentionBwdBf16));
}
