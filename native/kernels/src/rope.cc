// Rotary embedding on adjacent pairs (torchtitan's complex multiply), in place, on strided head slices so it
// applies to q/k (GQA) or to MLA's q_pe / k_pe sub-slices without a copy.
// Contraction into FMAs is off here so the rotation rounds like torch's fp32 complex multiply (each product and
// sum rounded separately); the reference emulates the same roundings and the test demands equality.
#pragma GCC optimize("fp-contract=off")
#include "common.h"
#include "bf16_simd.h"

// x rows (rows = B·S, position p = r % S), heads at headStride, pair i of a head at offset + 2i; cos, sin (S, dim/2):
//   out[2i] = x[2i]·cos − x[2i+1]·sin;  out[2i+1] = x[2i]·sin + x[2i+1]·cos   (sin negated when inverse).
// Out is x itself (rope), or bf16 rows at their own stride (ropeBf16: the rotation rounded once as it is stored,
// so a bf16 q or k costs one pass over its f32 source instead of a rotation in place and a rounding pass).
struct RopeShape {
  int64_t rows, S, heads, rowStride, headStride, offset, dim;
  bool inverse;
};
// (x0, x1, x2, x3, …) → (x1, x0, x3, x2, …)
static inline vf swapPairs(vf x) {
#if MOE_VL == 16
  return __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#elif MOE_VL == 8
  return __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6);
#else
  return __builtin_shufflevector(x, x, 1, 0, 3, 2);
#endif
}

// Whole vectors of a head's pairs at once: with the row's cos duplicated per pair (c, c) and sin signed per pair
// (−s, s), out = x·cd + swap(x)·sd gives out[2i] = x0·c + x1·(−s) = x0·c − x1·s and out[2i+1] = x1·c + x0·s, each
// product and the sum rounded separately as in the scalar form (negation and the order of a sum of two are exact).
template <typename Out>
static void rotate(const RopeShape& r, const float* x, const float* cs, const float* sn, Out* out, int64_t outRowStride) {
  const int64_t half = r.dim / 2, full = r.dim / VL * VL;
  const float sgn = r.inverse ? -1.0f : 1.0f;
#pragma omp parallel num_threads(threadsFor(r.rows * r.heads * r.dim))
  {
    Buf cd(full), sd(full);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < r.rows; row++) {
      const int64_t p = row % r.S;
      const float* c = cs + p * half;
      const float* s = sn + p * half;
      for (int64_t i = 0; i < full / 2; i++) {
        cd.data()[2 * i] = cd.data()[2 * i + 1] = c[i];
        sd.data()[2 * i] = -(sgn * s[i]), sd.data()[2 * i + 1] = sgn * s[i];
      }
      const float* xr = x + row * r.rowStride + r.offset;
      Out* orow = out + row * outRowStride + r.offset;
      // Heads innermost: at the debugmodel's head dim (16) a head is one vector, and a loop over it per head
      // rebuilt the loop's constants for every vector (measured 2× slower).
      for (int64_t j = 0; j < full; j += VL) {
        const vf cv = ldv(cd.data() + j), sv = ldv(sd.data() + j);
        for (int64_t h = 0; h < r.heads; h++) {
          const vf xv = ldv(xr + h * r.headStride + j);
          storeAs(orow + h * r.headStride + j, xv * cv + swapPairs(xv) * sv);
        }
      }
      for (int64_t h = 0; h < r.heads && full < r.dim; h++) {
        const float* xp = xr + h * r.headStride;
        Out* op = orow + h * r.headStride;
        for (int64_t i = full / 2; i < half; i++) {
          const float x0 = xp[2 * i], x1 = xp[2 * i + 1], si = sgn * s[i];
          storeAs(op + 2 * i, x0 * c[i] - x1 * si);
          storeAs(op + 2 * i + 1, x0 * si + x1 * c[i]);
        }
      }
    }
  }
}

// The shape arguments (3..10) and cos, sin, x checked; false when the call is over (or has nothing to do).
static bool readRope(Args& a, RopeShape& r, const float*& x, const float*& cs, const float*& sn) {
  r.rows = a.size(3, "rows"), r.S = a.size(4, "S"), r.heads = a.size(5, "heads");
  r.rowStride = a.size(6, "rowStride"), r.headStride = a.size(7, "headStride");
  r.offset = a.size(8, "offset"), r.dim = a.size(9, "dim");
  r.inverse = a.flag(10);
  if (a.ok && r.dim % 2 != 0) a.fail("dim = " + std::to_string(r.dim) + " must be even (pairs)");
  if (a.ok && r.rows > 0 && r.S == 0) a.fail("S must be ≥ 1");
  const bool empty = r.rows == 0 || r.heads == 0 || r.dim == 0;
  const int64_t half = r.dim / 2;
  x = a.f32(0, empty ? 0 : (r.rows - 1) * r.rowStride + (r.heads - 1) * r.headStride + r.offset + r.dim, "x");
  cs = a.f32(1, empty ? 0 : std::min(r.rows, r.S) * half, "cos");
  sn = a.f32(2, empty ? 0 : std::min(r.rows, r.S) * half, "sin");
  return a.ok && !empty;
}

static Napi::Value Rope(const Napi::CallbackInfo& info) {
  Args a(info, "rope");
  RopeShape r{};
  const float *x, *cs, *sn;
  if (!readRope(a, r, x, cs, sn)) return a.env.Undefined();
  rotate(r, x, cs, sn, const_cast<float*>(x), r.rowStride);
  return a.env.Undefined();
}

// ropeBf16(x, cos, sin, rows, S, heads, rowStride, headStride, offset, dim, inverse, out, outRowStride): as rope,
// x read only, the rotated pairs written to out (Uint16Array, bf16 bits) at out[r·outRowStride + h·headStride +
// offset + 2i, +1]; nothing else of out is written.
static Napi::Value RopeBf16(const Napi::CallbackInfo& info) {
  Args a(info, "ropeBf16");
  RopeShape r{};
  const float *x = nullptr, *cs = nullptr, *sn = nullptr;
  const bool work = readRope(a, r, x, cs, sn);
  if (!a.ok) return a.env.Undefined();
  const int64_t outRowStride = a.size(12, "outRowStride");
  uint16_t* out =
      a.u16(11, work ? (r.rows - 1) * outRowStride + (r.heads - 1) * r.headStride + r.offset + r.dim : 0, "out");
  if (!a.ok || !work) return a.env.Undefined();
  rotate(r, x, cs, sn, out, outRowStride);
  return a.env.Undefined();
}

void RegisterRope(Napi::Env env, Napi::Object exports) {
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("ropeBf16", Napi::Function::New(env, RopeBf16));
}
