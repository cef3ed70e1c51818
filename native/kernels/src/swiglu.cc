// SwiGLU elementwise forward/backward: h = silu(a) · b, the gate of every expert and of the shared/dense FFN.
#include "bf16_simd.h"
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

// Under bf16 compute: a, b are the bf16 outputs of the w1 and w3 products and h (w2's input) is bf16, as torch's
// bf16 linears give and take them; the math in f32 exactly as above, each output rounded once.
// a, b (n) bf16 → h (n) bf16.
static Napi::Value SwigluFwdBf16(const Napi::CallbackInfo& info) {
  Args q(info, "swigluFwdBf16");
  int64_t n = q.size(3, "n");
  const uint16_t* a = q.u16(0, n, "a");
  const uint16_t* b = q.u16(1, n, "b");
  uint16_t* h = q.u16(2, n, "h");
  if (!q.ok) return q.env.Undefined();
  const int64_t nv = n / VL;
#pragma omp parallel for schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < nv; i++) {
    vf x = ldBf16(a + VL * i);
    stBf16(h + VL * i, x * vsigmoid(x) * ldBf16(b + VL * i));
  }
  for (int64_t i = nv * VL; i < n; i++) {
    const float x = bf16ToF(a[i]);
    h[i] = roundBf16(x * ssigmoid(x) * bf16ToF(b[i]));
  }
  return q.env.Undefined();
}

// dh (n) f32, a, b (n) bf16 → da, db (n) bf16 (the w1/w3 products' output gradients, each read by two products).
static Napi::Value SwigluBwdBf16(const Napi::CallbackInfo& info) {
  Args q(info, "swigluBwdBf16");
  int64_t n = q.size(5, "n");
  const float* dh = q.f32(0, n, "dh");
  const uint16_t* a = q.u16(1, n, "a");
  const uint16_t* b = q.u16(2, n, "b");
  uint16_t* da = q.u16(3, n, "da");
  uint16_t* db = q.u16(4, n, "db");
  if (!q.ok) return q.env.Undefined();
  const int64_t nv = n / VL;
#pragma omp parallel for schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < nv; i++) {
    vf x = ldBf16(a + VL * i), y = ldBf16(b + VL * i), g = ldv(dh + VL * i);
    vf s = vsigmoid(x);
    stBf16(da + VL * i, g * y * s * (1.0f + x * (1.0f - s)));
    stBf16(db + VL * i, g * x * s);
  }
  for (int64_t i = nv * VL; i < n; i++) {
    const float x = bf16ToF(a[i]), y = bf16ToF(b[i]), g = dh[i], s = ssigmoid(x);
    da[i] = roundBf16(g * y * s * (1.0f + x * (1.0f - s)));
    db[i] = roundBf16(g * x * s);
  }
  return q.env.Undefined();
}

void RegisterSwiglu(Napi::Env env, Napi::Object exports) {
  exports.Set("swigluFwd", Napi::Function::New(env, SwigluFwd));
  exports.Set("swigluBwd", Napi::Function::New(env, SwigluBwd));
  exports.Set("swigluFwdBf16", Napi::Function::New(env, SwigluFwdBf16));
  exports.Set("swigluBwdBf16", Napi::Function::New(env, SwigluBwdBf16));
}
