// Elementwise helpers for residual adds, gradient accumulation, scaling and norms.
#include <vector>
#include "common.h"

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
  exports.Set("axpy", Napi::Function::New(env, Axpy));
  exports.Set("scale", Napi::Function::New(env, Scale));
  exports.Set("sumSquares", Napi::Function::New(env, SumSquares));
}
