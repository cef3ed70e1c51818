// MoE token permutation: gather rows into expert order (optionally scaled by the gate), scatter-add them back,
// and the per-row dot product that gives the gate gradient.
#include "common.h"

// out[r] = src[idx[r]] · (scale ? scale[r] : 1). src (·,D), idx (R), out (R,D) write. R = 0 (an expert with no
// tokens) is a no-op.
static Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  Args a(info, "gatherRows");
  int64_t R = a.size(3, "R"), D = a.size(4, "D");
  int64_t srcLen = 0;
  const float* src = a.f32(0, 0, "src", &srcLen);
  const int32_t* idx = a.i32(1, R, "idx");
  float* out = a.f32(2, R * D, "out");
  const float* sc = a.f32OrNull(5, R, "scale");
  if (!a.ok || D == 0 || R == 0) return a.env.Undefined();
  if (!a.idsInRange(idx, R, srcLen / D, "idx")) return a.env.Undefined();
#pragma omp parallel for schedule(static) num_threads(threadsFor(R * D))
  for (int64_t r = 0; r < R; r++) {
    const float* s = src + (int64_t)idx[r] * D;
    float* d = out + r * D;
    if (sc) {
      const float g = sc[r];
#pragma omp simd
      for (int64_t c = 0; c < D; c++) d[c] = s[c] * g;
    } else {
      std::memcpy(d, s, D * sizeof(float));
    }
  }
  return a.env.Undefined();
}

// out[idx[r]] += src[r] · (scale ? scale[r] : 1). src (R,D), out (·,D) accumulate. idx may repeat (top-k > 1 sends a
// token to several experts): threads split the columns, each walking all rows in order, so no two threads write the
// same element and the sum order is fixed.
static Napi::Value ScatterAddRows(const Napi::CallbackInfo& info) {
  Args a(info, "scatterAddRows");
  int64_t R = a.size(3, "R"), D = a.size(4, "D");
  const float* src = a.f32(0, R * D, "src");
  const int32_t* idx = a.i32(1, R, "idx");
  int64_t outLen = 0;
  float* out = a.f32(2, 0, "out", &outLen);
  const float* sc = a.f32OrNull(5, R, "scale");
  if (!a.ok || D == 0 || R == 0) return a.env.Undefined();
  if (!a.idsInRange(idx, R, outLen / D, "idx")) return a.env.Undefined();
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(threadsFor(R * D), D / 64));
#pragma omp parallel for schedule(static) num_threads((int)slices)
  for (int64_t t = 0; t < slices; t++) {
    const int64_t c0 = roundUp(D * t / slices, 16), c1 = t + 1 == slices ? D : roundUp(D * (t + 1) / slices, 16);
    for (int64_t r = 0; r < R; r++) {
      const float* s = src + r * D;
      float* d = out + (int64_t)idx[r] * D;
      const float g = sc ? sc[r] : 1.0f;
#pragma omp simd
      for (int64_t c = c0; c < c1; c++) d[c] += s[c] * g;
    }
  }
  return a.env.Undefined();
}

// dots[r] = Σ_d a[idx[r], d] · b[r, d]. a (·,D), b (R,D), dots (R) write.
static Napi::Value GatherRowDot(const Napi::CallbackInfo& info) {
  Args q(info, "gatherRowDot");
  int64_t R = q.size(4, "R"), D = q.size(5, "D");
  int64_t aLen = 0;
  const float* A = q.f32(0, 0, "a", &aLen);
  const int32_t* idx = q.i32(1, R, "idx");
  const float* B = q.f32(2, R * D, "b");
  float* dots = q.f32(3, R, "dots");
  if (!q.ok || R == 0) return q.env.Undefined();
  if (D == 0) {
    std::memset(dots, 0, R * sizeof(float));
    return q.env.Undefined();
  }
  if (!q.idsInRange(idx, R, aLen / D, "idx")) return q.env.Undefined();
#pragma omp parallel for schedule(static) num_threads(threadsFor(R * D))
  for (int64_t r = 0; r < R; r++) {
    const float* x = A + (int64_t)idx[r] * D;
    const float* y = B + r * D;
    vf acc[NV16] = {};
    int64_t d = 0;
    for (; d + 16 <= D; d += 16)
      for (int h = 0; h < NV16; h++) acc[h] += ldv(x + d + VL * h) * ldv(y + d + VL * h);
    float s = hsum16(acc);
    for (; d < D; d++) s += x[d] * y[d];
    dots[r] = s;
  }
  return q.env.Undefined();
}

void RegisterMoeRows(Napi::Env env, Napi::Object exports) {
  exports.Set("gatherRows", Napi::Function::New(env, GatherRows));
  exports.Set("scatterAddRows", Napi::Function::New(env, ScatterAddRows));
  exports.Set("gatherRowDot", Napi::Function::New(env, GatherRowDot));
}
