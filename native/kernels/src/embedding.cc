// Token embedding: row gather forward, scatter-add backward.
#include "common.h"

// table (V,D), ids (N) → out (N,D) write.
static Napi::Value EmbeddingFwd(const Napi::CallbackInfo& info) {
  Args a(info, "embeddingFwd");
  int64_t N = a.size(3, "N"), D = a.size(4, "D");
  int64_t tableLen = 0;
  const float* table = a.f32(0, 0, "table", &tableLen);
  const int32_t* ids = a.i32(1, N, "ids");
  float* out = a.f32(2, N * D, "out");
  if (!a.ok || D == 0) return a.env.Undefined();
  if (!a.idsInRange(ids, N, tableLen / D, "ids")) return a.env.Undefined();
#pragma omp parallel for schedule(static) num_threads(threadsFor(N * D))
  for (int64_t n = 0; n < N; n++) std::memcpy(out + n * D, table + (int64_t)ids[n] * D, D * sizeof(float));
  return a.env.Undefined();
}

// dout (N,D), ids (N) → dtable (V,D) accumulate. Repeated ids add up, in row order. Threads split the columns
// (each walks all rows over its own column range), so there are no write races and the sum order is fixed.
static Napi::Value EmbeddingBwd(const Napi::CallbackInfo& info) {
  Args a(info, "embeddingBwd");
  int64_t N = a.size(3, "N"), D = a.size(4, "D");
  const float* dout = a.f32(0, N * D, "dout");
  const int32_t* ids = a.i32(1, N, "ids");
  int64_t tableLen = 0;
  float* dtable = a.f32(2, 0, "dtable", &tableLen);
  if (!a.ok || D == 0) return a.env.Undefined();
  if (!a.idsInRange(ids, N, tableLen / D, "ids")) return a.env.Undefined();
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(threadsFor(N * D), D / 64));
#pragma omp parallel for schedule(static) num_threads((int)slices)
  for (int64_t t = 0; t < slices; t++) {
    const int64_t c0 = roundUp(D * t / slices, 16), c1 = t + 1 == slices ? D : roundUp(D * (t + 1) / slices, 16);
    for (int64_t n = 0; n < N; n++) {
      const float* src = dout + n * D;
      float* dst = dtable + (int64_t)ids[n] * D;
#pragma omp simd
      for (int64_t d = c0; d < c1; d++) dst[d] += src[d];
    }
  }
  return a.env.Undefined();
}

void RegisterEmbedding(Napi::Env env, Napi::Object exports) {
  exports.Set("embeddingFwd", Napi::Function::New(env, EmbeddingFwd));
  exports.Set("embeddingBwd", Napi::Function::New(env, EmbeddingBwd));
}
