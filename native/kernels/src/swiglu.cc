// SwiGLU elementwise forward/backward: h = silu(a) · b, the gate of every expert and of the shared/dense FFN.
#include "common.h"

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }
static inline float ssigmoid(float x) { return 1.0f / (1.0f + sexp(-x)); }

// a, b (n) → h (n) write: h = a·σ(a)·b.
static Napi::Value SwigluFwd(const Napi::CallbackInfo& info) {
  Args q(info, "swigluFwd");
  int64_t n = q.size(3, "n");
  const float* a = q.f32(0, n, "a");
  const float* b = q.f32(1, n, "b");
  float* h = q.f32(2, n, "h");
  if (!q.ok) return q.env.Undefined();
  const int64_t nv = n / VL;
#pragma omp parallel for schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < nv; i++) {
    vf x = ldv(a + VL * i);
    stv(h + VL * i, x * vsigmoid(x) * ldv(b + VL * i));
  }
  for (int64_t i = nv * VL; i < n; i++) h[i] = a[i] * ssigmoid(a[i]) * b[i];
  return q.env.Undefined();
}

// dh, a, b (n) → da, db (n) write: da = dh·b·σ(a)·(1 + a·(1 − σ(a))), db = dh·a·σ(a).
// da/db may alias dh (each chunk is read before it is written).
static Napi::Value SwigluBwd(const Napi::CallbackInfo& info) {
  Args q(info, "swigluBwd");
  int64_t n = q.size(5, "n");
  const float* dh = q.f32(0, n, "dh");
  const float* a = q.f32(1, n, "a");
  const float* b = q.f32(2, n, "b");
  float* da = q.f32(3, n, "da");
  float* db = q.f32(4, n, "db");
  if (!q.ok) return q.env.Undefined();
  const int64_t nv = n / VL;
#pragma omp parallel for schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < nv; i++) {
    vf x = ldv(a + VL * i), y = ldv(b + VL * i), g = ldv(dh + VL * i);
    vf s = vsigmoid(x);
    vf dav = g * y * s * (1.0f + x * (1.0f - s));
    vf dbv = g * x * s;
    stv(da + VL * i, dav);
    stv(db + VL * i, dbv);
  }
  for (int64_t i = nv * VL; i < n; i++) {
    const float x = a[i], y = b[i], g = dh[i], s = ssigmoid(x);
    const float dav = g * y * s * (1.0f + x * (1.0f - s)), dbv = g * x * s;
    da[i] = dav;
    db[i] = dbv;
  }
  return q.env.Undefined();
}

void RegisterSwiglu(Napi::Env env, Napi::Object exports) {
  exports.Set("swigluFwd", Napi::Function::New(env, SwigluFwd));
  exports.Set("swigluBwd", Napi::Function::New(env, SwigluBwd));
}
