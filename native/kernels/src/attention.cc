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
#include "attention_tiles.h"

namespace {

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

// c[r][v] = Σ_k A[r·lda + k] · B[k·BK + VL·v] for 4 rows of A and PG vectors of B (keys), in registers.
template <int NG>
inline void rowTile(vf (&out)[4][NG], int64_t K, const float* A, int64_t lda, const float* B) {
  vf c[4][NG];  // local, copied out once, as rowTileP (attention_bf16.cc): summing into `out` spilled every k step
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
  for (int r = 0; r < 4; r++)
    for (int v = 0; v < NG; v++) out[r][v] = c[r][v];
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

}  // namespace

// attentionFwd(q, k, v, o, lse, B, S, Hq, Hkv, dk, dv, scale)
static Napi::Value AttentionFwd(const Napi::CallbackInfo& info) {
  Args a(info, "attentionFwd");
  Shape s{};
  FwdArrays<float> x;
  if (!readFwdArrays(a, s, x) || s.B * s.S * s.Hq == 0) return a.env.Undefined();
  const float *q = x.q, *k = x.k, *v = x.v;
  float *o = x.o, *lse = x.lse;
  forQueryBlocks<FwdScratch>(
      s, [] {}, [&](int64_t b, int64_t h, int64_t qb, FwdScratch& w) { fwdTask(s, q, k, v, o, lse, b, h, qb, w); });
  return a.env.Undefined();
}

// attentionBwd(dout, q, k, v, o, lse, dq, dk, dv, B, S, Hq, Hkv, dk, dv, scale)
static Napi::Value AttentionBwd(const Napi::CallbackInfo& info) {
  Args a(info, "attentionBwd");
  Shape s{};
  BwdArrays<float> x;
  if (!readBwdArrays(a, s, x) || s.B * s.S * s.Hkv == 0) return a.env.Undefined();
  const float *dout = x.dout, *q = x.q, *k = x.k, *v = x.v, *o = x.o, *lse = x.lse;
  float *dq = x.dq, *dkOut = x.dk, *dvOut = x.dv;
  forKvHeads<BwdScratch>(s, [&](int64_t b, int64_t hk, BwdScratch& w) {
    bwdTask(s, dout, q, k, v, o, lse, dq, dkOut, dvOut, b, hk, w);
  });
  return a.env.Undefined();
}

void RegisterAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionFwd", Napi::Function::New(env, AttentionFwd));
  exports.Set("attentionBwd", Napi::Function::New(env, AttentionBwd));
}
