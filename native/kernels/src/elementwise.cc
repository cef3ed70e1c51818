// Elementwise helpers for residual adds, gradient accumulation, scaling and norms.
#include <cstring>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#include "common.h"

// dst ← src, `bytes` bytes, with non-temporal (streaming) stores for the 64-byte-aligned bulk of the destination:
// whole lines go to memory without first being read into the cache (an ordinary copy reads each destination line
// for ownership, then writes it back), and the copy does not evict other data. Bits are moved, never values.
static void streamCopyBytes(char* d, const char* s, size_t bytes) {
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
  size_t head = (64 - ((uintptr_t)d & 63)) & 63;
  if (head > bytes) head = bytes;
  std::memcpy(d, s, head);
  d += head, s += head, bytes -= head;
  const size_t bulk = bytes & ~(size_t)255;
  for (size_t i = 0; i < bulk; i += 256) {
#if defined(__AVX512F__)
    __m512i a = _mm512_loadu_si512((const void*)(s + i)), b = _mm512_loadu_si512((const void*)(s + i + 64));
    __m512i c = _mm512_loadu_si512((const void*)(s + i + 128)), e = _mm512_loadu_si512((const void*)(s + i + 192));
    _mm512_stream_si512((__m512i*)(d + i), a);
    _mm512_stream_si512((__m512i*)(d + i + 64), b);
    _mm512_stream_si512((__m512i*)(d + i + 128), c);
    _mm512_stream_si512((__m512i*)(d + i + 192), e);
#elif defined(__AVX__)
    for (size_t k = 0; k < 256; k += 64) {
      __m256i a = _mm256_loadu_si256((const __m256i*)(s + i + k)), b = _mm256_loadu_si256((const __m256i*)(s + i + k + 32));
      _mm256_stream_si256((__m256i*)(d + i + k), a);
      _mm256_stream_si256((__m256i*)(d + i + k + 32), b);
    }
#else
    for (size_t k = 0; k < 256; k += 16) _mm_stream_si128((__m128i*)(d + i + k), _mm_loadu_si128((const __m128i*)(s + i + k)));
#endif
  }
  // Streaming stores are weakly ordered: fence them before anything (the transport's Atomics) says the data is there.
  _mm_sfence();
  std::memcpy(d + bulk, s + bulk, bytes - bulk);
#else
  std::memcpy(d, s, bytes);
#endif
}

// dst ← src (n floats), bit for bit. stream: non-temporal stores (for large copies whose destination is not
// read again soon); else memcpy. Single-threaded. src and dst must not overlap.
static Napi::Value Copy(const Napi::CallbackInfo& info) {
  Args q(info, "copy");
  int64_t n = q.size(2, "n");
  const float* src = q.f32(0, n, "src");
  float* dst = q.f32(1, n, "dst");
  const bool stream = q.flag(3);
  if (!q.ok) return q.env.Undefined();
  const size_t bytes = (size_t)n * sizeof(float);
  if (n > 0 && (const char*)src < (const char*)dst + bytes && (const char*)dst < (const char*)src + bytes) {
    if (src != dst) std::memmove(dst, src, bytes);
    return q.env.Undefined();
  }
  if (stream) streamCopyBytes((char*)dst, (const char*)src, bytes);
  else std::memcpy(dst, src, bytes);
  return q.env.Undefined();
}

// x ← 0 (n floats), every bit (NaN and inf too), in parallel chunks: the per-step zeroing of all gradients (60 MB
// at the debugmodel's size, cold after the optimizer read them) is memory-bound, and one thread does not saturate
// the memory bandwidth of this machine kind.
static Napi::Value Zero(const Napi::CallbackInfo& info) {
  Args q(info, "zero");
  int64_t n = q.size(1, "n");
  float* x = q.f32(0, n, "x");
  if (!q.ok || n == 0) return q.env.Undefined();
  constexpr int64_t kChunk = 1 << 16;  // floats
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(threadsFor(n))
  for (int64_t c = 0; c < chunks; c++) {
    const int64_t i0 = c * kChunk;
    std::memset(x + i0, 0, (size_t)(std::min(n, i0 + kChunk) - i0) * sizeof(float));
  }
  return q.env.Undefined();
}

// out = a + b (n); out may alias a or b.
static Napi::Value Add(const Napi::CallbackInfo& info) {
  Args q(info, "add");
  int64_t n = q.size(3, "n");
  const float* a = q.f32(0, n, "a");
  const float* b = q.f32(1, n, "b");
  float* out = q.f32(2, n, "out");
  if (!q.ok) return q.env.Undefined();
#pragma omp parallel for simd schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
  return q.env.Undefined();
}

// y += alpha · x (n).
static Napi::Value Axpy(const Napi::CallbackInfo& info) {
  Args q(info, "axpy");
  double alpha = q.num(0, "alpha");
  int64_t n = q.size(3, "n");
  const float* x = q.f32(1, n, "x");
  float* y = q.f32(2, n, "y");
  if (!q.ok) return q.env.Undefined();
  const float al = (float)alpha;
#pragma omp parallel for simd schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < n; i++) y[i] += al * x[i];
  return q.env.Undefined();
}

// x ·= alpha (n).
static Napi::Value Scale(const Napi::CallbackInfo& info) {
  Args q(info, "scale");
  double alpha = q.num(1, "alpha");
  int64_t n = q.size(2, "n");
  float* x = q.f32(0, n, "x");
  if (!q.ok) return q.env.Undefined();
  const float al = (float)alpha;
#pragma omp parallel for simd schedule(static) num_threads(threadsFor(n))
  for (int64_t i = 0; i < n; i++) x[i] *= al;
  return q.env.Undefined();
}

// Σ x² (n) in double: grad-norm clipping sums millions of squares, where float accumulation would lose digits.
// Fixed per-thread ranges, partials added in thread order: deterministic for a given thread count.
static Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Args q(info, "sumSquares");
  int64_t n = q.size(1, "n");
  const float* x = q.f32(0, n, "x");
  if (!q.ok) return q.env.Undefined();
  const int T = threadsFor(n);
  std::vector<double> part(T, 0.0);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t i0 = n * t / nt, i1 = n * (t + 1) / nt;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; i++) s += (double)x[i] * (double)x[i];
    part[t] = s;
  }
  double s = 0.0;
  for (int t = 0; t < T; t++) s += part[t];
  return Napi::Number::New(q.env, s);
}

void RegisterElementwise(Napi::Env env, Napi::Object exports) {
  exports.Set("add", Napi::Function::New(env, Add));
  exports.Set("copy", Napi::Function::New(env, Copy));
  exports.Set("zero", Napi::Function::New(env, Zero));
  exports.Set("axpy", Napi::Function::New(env, Axpy));
  exports.Set("scale", Napi::Function::New(env, Scale));
  exports.Set("sumSquares", Napi::Function::New(env, SumSquares));
}
