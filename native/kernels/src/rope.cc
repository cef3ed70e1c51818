// Rotary embedding on adjacent pairs (torchtitan's complex multiply), in place, on strided head slices so it
// applies to q/k (GQA) or to MLA's q_pe / k_pe sub-slices without a copy.
// Contraction into FMAs is off here so the rotation rounds like torch's fp32 complex multiply (each product and
// sum rounded separately); the reference emulates the same roundings and the test demands equality.
#pragma GCC optimize("fp-contract=off")
#include "common.h"

// x rows (rows = B·S, position p = r % S), heads at headStride, pair i of a head at offset + 2i; cos, sin (S, dim/2):
//   out[2i] = x[2i]·cos − x[2i+1]·sin;  out[2i+1] = x[2i]·sin + x[2i+1]·cos   (sin negated when inverse).
static Napi::Value Rope(const Napi::CallbackInfo& info) {
  Args a(info, "rope");
  int64_t rows = a.size(3, "rows"), S = a.size(4, "S"), heads = a.size(5, "heads");
  int64_t rowStride = a.size(6, "rowStride"), headStride = a.size(7, "headStride");
  int64_t offset = a.size(8, "offset"), dim = a.size(9, "dim");
  bool inverse = a.flag(10);
  if (a.ok && dim % 2 != 0) a.fail("dim = " + std::to_string(dim) + " must be even (pairs)");
  if (a.ok && rows > 0 && S == 0) a.fail("S must be ≥ 1");
  const bool empty = rows == 0 || heads == 0 || dim == 0;
  const int64_t half = dim / 2;
  float* x = a.f32(0, empty ? 0 : (rows - 1) * rowStride + (heads - 1) * headStride + offset + dim, "x");
  const float* cs = a.f32(1, empty ? 0 : std::min(rows, S) * half, "cos");
  const float* sn = a.f32(2, empty ? 0 : std::min(rows, S) * half, "sin");
  if (!a.ok || empty) return a.env.Undefined();
  const float sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static) num_threads(threadsFor(rows * heads * dim))
  for (int64_t r = 0; r < rows; r++) {
    const int64_t p = r % S;
    const float* c = cs + p * half;
    const float* s = sn + p * half;
    for (int64_t h = 0; h < heads; h++) {
      float* xp = x + r * rowStride + h * headStride + offset;
#pragma omp simd
      for (int64_t i = 0; i < half; i++) {
        const float x0 = xp[2 * i], x1 = xp[2 * i + 1], si = sgn * s[i];
        xp[2 * i] = x0 * c[i] - x1 * si;
        xp[2 * i + 1] = x0 * si + x1 * c[i];
      }
    }
  }
  return a.env.Undefined();
}

void RegisterRope(Napi::Env env, Napi::Object exports) { exports.Set("rope", Napi::Function::New(env, Rope)); }
