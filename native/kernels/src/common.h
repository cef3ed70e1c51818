// Shared helpers for the kernels addon: checked typed-array arguments, portable SIMD (GCC vector extensions),
// a vectorized exp, aligned scratch buffers and the OpenMP sizing policy.
#pragma once
#include <napi.h>
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// ---------------------------------------------------------------------------------------------------------------
// Arguments. Every kernel checks buffer lengths and index ranges before touching memory: a wrong length from JS
// must be a RangeError naming the kernel and the argument, never a silent out-of-bounds write. With C++
// exceptions disabled, the first failure throws a JS exception and sets ok = false; the caller returns.
struct Args {
  const Napi::CallbackInfo& info;
  Napi::Env env;
  const char* fn;
  bool ok = true;

  Args(const Napi::CallbackInfo& i, const char* name) : info(i), env(i.Env()), fn(name) {}

  void fail(const std::string& msg) {
    if (!ok) return;
    ok = false;
    Napi::RangeError::New(env, std::string(fn) + ": " + msg).ThrowAsJavaScriptException();
  }

  Napi::Value arg(int i) {
    if ((size_t)i >= info.Length()) {
      fail("missing argument #" + std::to_string(i));
      return env.Undefined();
    }
    return info[i];
  }

  // One napi_get_typedarray_info call per array gives type, length and the element pointer (already offset for
  // subarray views): small kernels are called thousands of times per step, so the checks must stay cheap.
  void* typed(int i, napi_typedarray_type want, const char* typeName, int64_t need, const char* name, int64_t* len) {
    if (!ok) return nullptr;
    Napi::Value v = arg(i);
    if (!ok) return nullptr;
    napi_typedarray_type type;
    size_t length = 0;
    void* data = nullptr;
    if (napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr) != napi_ok || type != want) {
      fail(std::string(name) + " must be a" + (typeName[0] == 'I' ? "n " : " ") + typeName);
      return nullptr;
    }
    if ((int64_t)length < need) {
      fail(std::string(name) + " has " + std::to_string(length) + " elements, needs at least " + std::to_string(need));
      return nullptr;
    }
    if (len) *len = (int64_t)length;
    return data;
  }
  // A Float32Array with at least `need` elements (its length in *len if asked).
  float* f32(int i, int64_t need, const char* name, int64_t* len = nullptr) {
    return (float*)typed(i, napi_float32_array, "Float32Array", need, name, len);
  }
  // Float32Array or null/undefined.
  float* f32OrNull(int i, int64_t need, const char* name) {
    if (!ok) return nullptr;
    if ((size_t)i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
    return f32(i, need, name);
  }
  // bfloat16 storage: the raw 16-bit patterns in a Uint16Array.
  uint16_t* u16(int i, int64_t need, const char* name, int64_t* len = nullptr) {
    return (uint16_t*)typed(i, napi_uint16_array, "Uint16Array", need, name, len);
  }
  int32_t* i32(int i, int64_t need, const char* name, int64_t* len = nullptr) {
    return (int32_t*)typed(i, napi_int32_array, "Int32Array", need, name, len);
  }
  // A non-negative integer (a size or a count).
  int64_t size(int i, const char* name) {
    double d = num(i, name);
    if (!ok) return 0;
    if (!(d >= 0) || d != std::floor(d) || d > 9.0e15) {
      fail(std::string(name) + " = " + std::to_string(d) + " must be a non-negative integer");
      return 0;
    }
    return (int64_t)d;
  }
  double num(int i, const char* name) {
    if (!ok) return 0;
    Napi::Value v = arg(i);
    if (!ok) return 0;
    double d = 0;
    if (napi_get_value_double(env, v, &d) != napi_ok) {
      fail(std::string(name) + " must be a number");
      return 0;
    }
    return d;
  }
  bool flag(int i) {
    if (!ok) return false;
    Napi::Value v = arg(i);
    return ok && v.ToBoolean().Value();
  }
  // ids[r] ∈ [0, limit) for r < n; names the first bad row.
  bool idsInRange(const int32_t* ids, int64_t n, int64_t limit, const char* name) {
    if (!ok) return false;
    for (int64_t r = 0; r < n; r++) {
      if (ids[r] < 0 || ids[r] >= limit) {
        fail(std::string(name) + "[" + std::to_string(r) + "] = " + std::to_string(ids[r]) + " is outside [0, " +
             std::to_string(limit) + ")");
        return false;
      }
    }
    return true;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// SIMD through GCC vector extensions, at the machine's native width: VL floats = one register (zmm with
// AVX-512, ymm with AVX/AVX2, xmm below that; MOE_VL overrides it, e.g. -DMOE_VL=16 on AVX2 reproduces the AVX-512 arithmetic for
// comparison). A vector wider than the hardware's is not split into registers: GCC keeps it in a stack slot and
// expands every operation piecewise through memory (-Wvector-operation-performance lists them), which made the
// 16-wide kernels ~20x slower on AVX2. So kernels are written per VL-lane vector, never wider.
//
// Reductions across lanes still follow the 16-lane order the kernels had when they were written for 16 lanes
// (a sum is accumulated in 16 logical lanes, i.e. 16/VL vectors, and those lanes are added in order 0..15), so
// no summation order depends on the ISA the addon was built for. (Whether GCC contracts a·b + c into one FMA is
// still its choice per -march: its Zen tuning, for one, keeps short loop-carried sums as separate mul and add.)
#ifndef MOE_VL
#if defined(__AVX512F__)
#define MOE_VL 16
#elif defined(__AVX__)
#define MOE_VL 8
#else
#define MOE_VL 4
#endif
#endif
constexpr int VL = MOE_VL;
static_assert(VL == 4 || VL == 8 || VL == 16, "VL: 4 (SSE), 8 (AVX2) or 16 (AVX-512)");
constexpr int NV16 = 16 / VL;  // vectors per 16 logical lanes
typedef float vf __attribute__((vector_size(4 * VL)));
typedef int32_t vi __attribute__((vector_size(4 * VL)));
typedef double vdh __attribute__((vector_size(4 * VL)));  // VL/2 doubles: one register, half a vf widened

static inline vf ldv(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
static inline void stv(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
static inline vf splat(float x) { return vf{} + x; }
static inline vi iotav() {
#if MOE_VL == 16
  return vi{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
#elif MOE_VL == 8
  return vi{0, 1, 2, 3, 4, 5, 6, 7};
#else
  return vi{0, 1, 2, 3};
#endif
}
// Σ of 16 logical lanes held in NV16 vectors, in lane order.
static inline float hsum16(const vf* v) {
  float s = 0;
  for (int h = 0; h < NV16; h++)
    for (int i = 0; i < VL; i++) s += v[h][i];
  return s;
}
static inline float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < VL; i++) m = v[i] > m ? v[i] : m;
  return m;
}
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }

// exp on VL lanes (Cephes expf: range reduction by ln2 in two parts, degree-6 polynomial; ≈1–2 ulp).
// x < −87.34 flushes to 0 (torch would return a denormal; the difference is < 1.2e−38 absolute), x > 88.72 → inf,
// NaN propagates. −inf (masked attention scores) gives exactly 0.
static inline vf vexp(vf x) {
  const vi under = x < splat(-87.336544f);
  const vi over = x > splat(88.72283f);
  vf xc = x > splat(88.0f) ? splat(88.0f) : x;
  xc = xc < splat(-87.336544f) ? splat(-87.336544f) : xc;
  const vf magic = splat(12582912.0f);  // 1.5·2^23: adding it rounds to the nearest integer
  vf t = xc * 1.44269504088896341f + magic;
  vf n = t - magic;
  vf r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  vf y = p * (r * r) + r + 1.0f;
  vi ni = __builtin_convertvector(n, vi);
  vi bits = (ni + 127) << 23;
  vf pow2;
  __builtin_memcpy(&pow2, &bits, sizeof pow2);
  y = y * pow2;
  y = under ? splat(0.0f) : y;
  y = over ? splat(std::numeric_limits<float>::infinity()) : y;
  return y;
}

// 2^f for f ∈ [−½, ½]: its degree-6 Taylor polynomial (relative error ≤ 1.2e−7).
static inline vf exp2Poly(vf f) {
  vf p = splat(1.5403530e-4f);
  p = p * f + 1.3333558e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022651e-1f;
  p = p * f + 6.9314718e-1f;
  return p * f + 1.0f;
}

// 2^x for x ≤ 0 on VL lanes, for softmax in base 2 (scores pre-multiplied by log2 e): no overflow path and no
// two-part ln2 reduction, so ~15 vector ops instead of ~22. Round-to-nearest split x = n + f, f ∈ [−½, ½],
// 2^f by its degree-6 Taylor polynomial (relative error ≤ 1.2e−7, ≈1 ulp). x < −126 (and −inf) → 0; NaN propagates.
static inline vf vexp2Neg(vf x) {
  const vi under = x < splat(-126.0f);
  vf xc = x < splat(-126.0f) ? splat(-126.0f) : x;
  const vf magic = splat(12582912.0f);
  vf t = xc + magic;
  vf f = xc - (t - magic);
  const vf p = exp2Poly(f);
  vi ti;
  __builtin_memcpy(&ti, &t, sizeof ti);
  vi bits = (ti - 0x4B400000 + 127) << 23;  // t's low mantissa bits hold n
  vf pow2;
  __builtin_memcpy(&pow2, &bits, sizeof pow2);
  vf y = p * pow2;
  return under ? splat(0.0f) : y;
}

// vexp2Neg for finite x (attention's probabilities, masked by the caller after the exp instead of by −inf): the
// same split and polynomial, with AVX-512's vrndscaleps / vscalefps doing the rounding and the 2^n scaling in one
// instruction each (no clamp, no integer exponent assembly: ~9 operations instead of ~15, in the softmax loops
// that bound the attention kernels at small head dims). Equal to vexp2Neg for x ≥ −126; below, scalef rounds to a
// denormal where vexp2Neg flushes to 0 (|difference| < 2^−126). −inf gives NaN here: callers never pass it.
// (The maskz forms with a full mask: GCC 12's unmasked ones read an uninitialised register.)
static inline vf vexp2NegFinite(vf x) {
#if defined(__AVX512F__) && MOE_VL == 16
  const __m512 n = _mm512_maskz_roundscale_ps((__mmask16)-1, (__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const vf f = x - (vf)n;
  const vf p = exp2Poly(f);
  return (vf)_mm512_maskz_scalef_ps((__mmask16)-1, (__m512)p, n);
#else
  return vexp2Neg(x);
#endif
}

// Scalar exp with the same numerics as vexp, for tails (so a row gives the same values whatever its alignment).
static inline float sexp(float x) {
  vf v = splat(x);
  return vexp(v)[0];
}

// ---------------------------------------------------------------------------------------------------------------
// Scratch memory (64-byte aligned, zero-initialised on request).
struct Buf {
  float* p = nullptr;
  size_t n = 0;
  Buf() = default;
  explicit Buf(size_t count, bool zero = false) { alloc(count, zero); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { std::free(p); }
  void alloc(size_t count, bool zero = false) {
    std::free(p);
    n = count;
    size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
    p = (float*)std::aligned_alloc(64, bytes > 0 ? bytes : 64);
    if (zero) std::memset(p, 0, count * sizeof(float));
  }
  float* data() { return p; }
};

// ---------------------------------------------------------------------------------------------------------------
// OpenMP sizing: with the passive wait policy (see src/tensor/kernels.ts) waking a sleeping team costs ~5–20 µs,
// so a call only goes parallel when each thread gets ≥ 64 K elements (≈ 20–50 µs of streaming work); smaller calls
// stay on the calling thread. The team size is the calling thread's omp ICV, set by setNumThreads (per Node
// thread, so each rank of the threads transport chooses its own).
static constexpr int64_t kParallelMinElems = 1 << 16;
static inline int threadsFor(int64_t work, int64_t minPerThread = kParallelMinElems) {
  int t = omp_get_max_threads();
  int64_t byWork = work / minPerThread;
  if (byWork < t) t = (int)(byWork < 1 ? 1 : byWork);
  return t;
}

static inline int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Registration of each kernel group (one .cc file each).
bool RegisterBlas(Napi::Env env, Napi::Object exports);  // false (JS exception pending) if BLAS cannot load
void RegisterNorm(Napi::Env env, Napi::Object exports);
void RegisterSwiglu(Napi::Env env, Napi::Object exports);
void RegisterRope(Napi::Env env, Napi::Object exports);
void RegisterAttention(Napi::Env env, Napi::Object exports);
void RegisterAttentionBf16(Napi::Env env, Napi::Object exports);
void RegisterCrossEntropy(Napi::Env env, Napi::Object exports);
void RegisterEmbedding(Napi::Env env, Napi::Object exports);
void RegisterMoeRows(Napi::Env env, Napi::Object exports);
void RegisterOptim(Napi::Env env, Napi::Object exports);
void RegisterElementwise(Napi::Env env, Napi::Object exports);
void RegisterBf16(Napi::Env env, Napi::Object exports);
