// RMSNorm forward and backward (torch nn.RMSNorm, fp32): one pass per row, rows split over OpenMP threads.
#include <vector>
#include "common.h"
#include "bf16_simd.h"
#include "gemm_args.h"  // isU16Arg

// Σ_d x[d]² of one row in float lanes (16 partial sums, then a lane sum: error ≈ √(D/16)·ulp, below torch's own).
static inline float rowSumSq(const float* x, int64_t D) {
  vf acc[NV16] = {};
  int64_t d = 0;
  for (; d + 16 <= D; d += 16)
    for (int h = 0; h < NV16; h++) {
      vf v = ldv(x + d + VL * h);
      acc[h] += v * v;
    }
  float s = hsum16(acc);
  for (; d < D; d++) s += x[d] * x[d];
  return s;
}

// x (N,D), w (D) → y (N,D) write, rstd (N) write: y = (x · rstd) · w, rstd = 1/sqrt(mean(x²) + eps).
// With `residual` (optional, N×D): x ← x + residual first, in place, row by row (a block's residual add and the
// norm that reads its result: the row is still in L1 when the norm reads it, instead of a separate pass over
// both). The sum is the same float add as add(residual, x, x).
template <typename Out>
static void rmsnormRows(float* x, const float* res, const float* w, Out* y, float* rstd, int64_t N, int64_t D,
                        float eps) {
#pragma omp parallel for schedule(static) num_threads(threadsFor(N * D))
  for (int64_t n = 0; n < N; n++) {
    float* xr = x + n * D;
    Out* yr = y + n * D;
    if (res) {
      const float* rr = res + n * D;
      int64_t d = 0;
      for (; d + VL <= D; d += VL) stv(xr + d, ldv(rr + d) + ldv(xr + d));
      for (; d < D; d++) xr[d] = rr[d] + xr[d];
    }
    const float r = 1.0f / std::sqrt(rowSumSq(xr, D) / (float)D + eps);
    rstd[n] = r;
    int64_t d = 0;
    for (; d + VL <= D; d += VL) storeAs(yr + d, (ldv(xr + d) * r) * ldv(w + d));
    for (; d < D; d++) storeAs(yr + d, (xr[d] * r) * w[d]);
  }
}

// y may be a Uint16Array (bf16 compute, where only products read y): each value rounded once as it is stored.
static Napi::Value RmsnormFwd(const Napi::CallbackInfo& info) {
  Args a(info, "rmsnormFwd");
  int64_t N = a.size(4, "N"), D = a.size(5, "D");
  double eps = a.num(6, "eps");
  float* x = a.f32(0, N * D, "x");
  const float* w = a.f32(1, D, "w");
  const bool bf16 = a.ok && isU16Arg(a, 2);
  float* y = bf16 ? nullptr : a.f32(2, N * D, "y");
  uint16_t* y16 = bf16 ? a.u16(2, N * D, "y") : nullptr;
  float* rstd = a.f32(3, N, "rstd");
  const float* res = a.f32OrNull(7, N * D, "residual");
  if (!a.ok) return a.env.Undefined();
  if (bf16) rmsnormRows(x, res, w, y16, rstd, N, D, (float)eps);
  else rmsnormRows(x, res, w, y, rstd, N, D, (float)eps);
  return a.env.Undefined();
}

// dy, x (N,D), w (D), rstd (N) → dx (N,D) write, dw (D) accumulate. With x̂ = x·rstd, g = dy·w:
//   dx = rstd · (g − x̂ · mean(g · x̂)) [+ extra],   dw += Σ_rows dy · x̂.
// `extra` (optional, N×D): the residual branch's gradient, added to each dx element as it is written (the value
// rounded to float first, then the same float add as add(dx, extra, dx) after the kernel).
// dw partial sums are per thread in double over a fixed row partition, then added in thread order, so the result
// is deterministic for a given thread count.
static Napi::Value RmsnormBwd(const Napi::CallbackInfo& info) {
  Args a(info, "rmsnormBwd");
  int64_t N = a.size(6, "N"), D = a.size(7, "D");
  const float* dy = a.f32(0, N * D, "dy");
  const float* x = a.f32(1, N * D, "x");
  const float* w = a.f32(2, D, "w");
  const float* rstd = a.f32(3, N, "rstd");
  float* dx = a.f32(4, N * D, "dx");
  float* dw = a.f32(5, D, "dw");
  const float* extra = a.f32OrNull(8, N * D, "extra");
  if (!a.ok) return a.env.Undefined();
  const int T = threadsFor(N * D);
  std::vector<double> part((size_t)T * D, 0.0);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t n0 = N * t / nt, n1 = N * (t + 1) / nt;
    double* pw = part.data() + (size_t)t * D;
    for (int64_t n = n0; n < n1; n++) {
      const float* xr = x + n * D;
      const float* gr = dy + n * D;
      float* dxr = dx + n * D;
      const float r = rstd[n];
      vf acc[NV16] = {};
      int64_t d = 0;
      for (; d + 16 <= D; d += 16)
        for (int h = 0; h < NV16; h++) acc[h] += ldv(gr + d + VL * h) * ldv(w + d + VL * h) * ldv(xr + d + VL * h);
      float dot = hsum16(acc);
      for (; d < D; d++) dot += gr[d] * w[d] * xr[d];
      const float c = dot * r / (float)D;  // mean(g·x̂)
      for (d = 0; d + VL <= D; d += VL) {
        vf xh = ldv(xr + d) * r;
        vf g = ldv(gr + d);
        vf v = (g * ldv(w + d) - xh * c) * r;
        if (extra) {
          __asm__("" : "+v"(v));  // v rounded as stored before: no contraction of its last product into the add
          v = v + ldv(extra + n * D + d);
        }
        stv(dxr + d, v);
        const vf prod = g * xh;
#if MOE_VL == 16
        vdh lo = __builtin_convertvector(__builtin_shufflevector(prod, prod, 0, 1, 2, 3, 4, 5, 6, 7), vdh);
        vdh hi = __builtin_convertvector(__builtin_shufflevector(prod, prod, 8, 9, 10, 11, 12, 13, 14, 15), vdh);
#elif MOE_VL == 8
        vdh lo = __builtin_convertvector(__builtin_shufflevector(prod, prod, 0, 1, 2, 3), vdh);
        vdh hi = __builtin_convertvector(__builtin_shufflevector(prod, prod, 4, 5, 6, 7), vdh);
#else  // a 2-float vector is no machine mode: convert lane by lane
        vdh lo = {(double)prod[0], (double)prod[1]};
        vdh hi = {(double)prod[2], (double)prod[3]};
#endif
        vdh p0, p1;
        __builtin_memcpy(&p0, pw + d, sizeof p0);
        __builtin_memcpy(&p1, pw + d + VL / 2, sizeof p1);
        p0 += lo;
        p1 += hi;
        __builtin_memcpy(pw + d, &p0, sizeof p0);
        __builtin_memcpy(pw + d + VL / 2, &p1, sizeof p1);
      }
      for (; d < D; d++) {
        const float xh = xr[d] * r;
        float v = (gr[d] * w[d] - xh * c) * r;
        if (extra) {
          __asm__("" : "+v"(v));
          v = v + extra[n * D + d];
        }
        dxr[d] = v;
        pw[d] += (double)(gr[d] * xh);
      }
    }
  }
  for (int64_t d = 0; d < D; d++) {
    double s = dw[d];
    for (int t = 0; t < T; t++) s += part[(size_t)t * D + d];
    dw[d] = (float)s;
  }
  return a.env.Undefined();
}

void RegisterNorm(Napi::Env env, Napi::Object exports) {
  exports.Set("rmsnormFwd", Napi::Function::New(env, RmsnormFwd));
  exports.Set("rmsnormBwd", Napi::Function::New(env, RmsnormBwd));
}
