// AdamW (torch semantics, decoupled weight decay) on one flat parameter shard.
//
// Contraction into FMAs is switched off for this file: torch's fused CPU kernel rounds every product and sum to
// float32 separately, and with the same operation order this kernel then reproduces it bit for bit (the reference
// in kernels-ref.ts emulates exactly these roundings, so the test can demand equality).
#pragma GCC optimize("fp-contract=off")
#include "common.h"

// p, g, m, v (n); step t ≥ 1; optional gradScale (default 1). Scalars in double (as torch computes them), then
// float32 per element, g read as g·gradScale (clip_grad_norm_'s coefficient, applied here instead of in a pass of
// its own over every gradient: the same float product torch's in-place multiply stores):
//   p ← p·(1 − lr·wd);  m ← m·β1 + g·(1−β1);  v ← v·β2 + (g·g)·(1−β2);
//   p ← p − (lr/(1−β1^t) · m) / (sqrt(v)/sqrt(1−β2^t) + eps)
static Napi::Value AdamW(const Napi::CallbackInfo& info) {
  Args a(info, "adamw");
  int64_t n = a.size(4, "n");
  double lr = a.num(5, "lr"), beta1 = a.num(6, "beta1"), beta2 = a.num(7, "beta2"), eps = a.num(8, "eps");
  double wd = a.num(9, "wd"), step = a.num(10, "step");
  const bool scaled = info.Length() > 11 && !info[11].IsUndefined();
  const float gs = scaled ? (float)a.num(11, "gradScale") : 1.0f;
  if (a.ok && !(step >= 1)) a.fail("step = " + std::to_string(step) + ", must be ≥ 1 (1-based)");
  float* p = a.f32(0, n, "p");
  const float* g = a.f32(1, n, "g");
  float* m = a.f32(2, n, "m");
  float* v = a.f32(3, n, "v");
  if (!a.ok) return a.env.Undefined();
  const double bc1 = 1.0 - std::pow(beta1, step), bc2 = 1.0 - std::pow(beta2, step);
  const float decay = (float)(1.0 - lr * wd), b1 = (float)beta1, c1 = (float)(1.0 - beta1);
  const float b2 = (float)beta2, c2 = (float)(1.0 - beta2);
  const float stepSize = (float)(lr / bc1), bc2sqrt = (float)std::sqrt(bc2), e = (float)eps;
#pragma omp parallel for simd schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < n; i++) {
    const float gi = g[i] * gs;
    const float pi = p[i] * decay;
    const float mi = m[i] * b1 + gi * c1;
    const float vi = v[i] * b2 + (gi * gi) * c2;
    const float denom = std::sqrt(vi) / bc2sqrt + e;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - (stepSize * mi) / denom;
  }
  return a.env.Undefined();
}

void RegisterOptim(Napi::Env env, Napi::Object exports) { exports.Set("adamw", Napi::Function::New(env, AdamW)); }
