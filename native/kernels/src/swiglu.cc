// SwiGLU elementwise forward/backward: h = silu(a) · b, the gate of every expert and of the shared/dense FFN.
#include "bf16_simd.h"
#include "common.h"
#include "gemm_args.h"  // gemmOperand: a typed-array argument of the element type asked for

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }
static inline float ssigmoid(float x) { return 1.0f / (1.0f + sexp(-x)); }

// Either storage of a, b and the outputs: f32 as is; bf16 bits (the bf16 path: a, b are the bf16 outputs of the w1
// and w3 products, h is w2's input, as torch's bf16 linears give and take them) widened on load and rounded once
// on store. The math is the same f32 either way. dh is always f32.
static inline vf ldT(const float* p) { return ldv(p); }
static inline vf ldT(const uint16_t* p) { return ldBf16(p); }
static inline void stT(float* p, vf x) { stv(p, x); }
static inline void stT(uint16_t* p, vf x) { stBf16(p, x); }
static inline float toF(float x) { return x; }
static inline float toF(uint16_t h) { return bf16ToF(h); }

// a, b (n) → h (n) write: h = a·σ(a)·b.
template <typename T>
static Napi::Value SwigluFwdT(const Napi::CallbackInfo& info, const char* name) {
  Args q(info, name);
  int64_t n = q.size(3, "n");
  const T* a = gemmOperand(q, 0, n, "a", (T*)nullptr);
  const T* b = gemmOperand(q, 1, n, "b", (T*)nullptr);
  T* h = gemmOperand(q, 2, n, "h", (T*)nullptr);
  if (!q.ok) return q.env.Undefined();
  const int64_t nv = n / VL;
#pragma omp parallel for schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < nv; i++) {
    vf x = ldT(a + VL * i);
    stT(h + VL * i, x * vsigmoid(x) * ldT(b + VL * i));
  }
  for (int64_t i = nv * VL; i < n; i++) {
    const float x = toF(a[i]);
    storeAs(h + i, x * ssigmoid(x) * toF(b[i]));
  }
  return q.env.Undefined();
}

// dh (n) f32, a, b (n) → da, db (n) write: da = dh·b·σ(a)·(1 + a·(1 − σ(a))), db = dh·a·σ(a).
// f32 da/db may alias dh (each chunk is read before it is written).
template <typename T>
static Napi::Value SwigluBwdT(const Napi::CallbackInfo& info, const char* name) {
  Args q(info, name);
  int64_t n = q.size(5, "n");
  const float* dh = q.f32(0, n, "dh");
  const T* a = gemmOperand(q, 1, n, "a", (T*)nullptr);
  const T* b = gemmOperand(q, 2, n, "b", (T*)nullptr);
  T* da = gemmOperand(q, 3, n, "da", (T*)nullptr);
  T* db = gemmOperand(q, 4, n, "db", (T*)nullptr);
  if (!q.ok) return q.env.Undefined();
  const int64_t nv = n / VL;
#pragma omp parallel for schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < nv; i++) {
    vf x = ldT(a + VL * i), y = ldT(b + VL * i), g = ldv(dh + VL * i);
    vf s = vsigmoid(x);
    vf dav = g * y * s * (1.0f + x * (1.0f - s));
    vf dbv = g * x * s;
    stT(da + VL * i, dav);
    stT(db + VL * i, dbv);
  }
  for (int64_t i = nv * VL; i < n; i++) {
    const float x = toF(a[i]), y = toF(b[i]), g = dh[i], s = ssigmoid(x);
    const float dav = g * y * s * (1.0f + x * (1.0f - s)), dbv = g * x * s;
    storeAs(da + i, dav);
    storeAs(db + i, dbv);
  }
  return q.env.Undefined();
}

static Napi::Value SwigluFwd(const Napi::CallbackInfo& info) { return SwigluFwdT<float>(info, "swigluFwd"); }
static Napi::Value SwigluBwd(const Napi::CallbackInfo& info) { return SwigluBwdT<float>(info, "swigluBwd"); }
static Napi::Value SwigluFwdBf16(const Napi::CallbackInfo& info) { return SwigluFwdT<uint16_t>(info, "swigluFwdBf16"); }
static Napi::Value SwigluBwdBf16(const Napi::CallbackInfo& info) { return SwigluBwdT<uint16_t>(info, "swigluBwdBf16"); }

void RegisterSwiglu(Napi::Env env, Napi::Object exports) {
  exports.Set("swigluFwd", Napi::Function::New(env, SwigluFwd));
  exports.Set("swigluBwd", Napi::Function::New(env, SwigluBwd));
  exports.Set("swigluFwdBf16", Napi::Function::New(env, SwigluFwdBf16));
  exports.Set("swigluBwdBf16", Napi::Function::New(env, SwigluBwdBf16));
}
