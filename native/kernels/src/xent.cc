// Fused softmax + cross-entropy over the vocabulary (torch F.cross_entropy, reduction "sum", ignore_index −100).
#include <vector>
#include "common.h"
#include "bf16_simd.h"
#include "gemm_args.h"  // isU16Arg

static constexpr int32_t kIgnore = -100;

static bool checkLabels(Args& a, const int32_t* labels, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; n++) {
    const int32_t y = labels[n];
    if (y != kIgnore && (y < 0 || y >= V)) {
      a.fail("labels[" + std::to_string(n) + "] = " + std::to_string(y) + " is outside [0, " + std::to_string(V) +
             ") and is not the ignore index -100");
      return false;
    }
  }
  return true;
}

// log Σ_j exp(x_j) of one row. Two sweeps over the row (max, then Σ exp(x − max)), but the row is read from memory
// once: V·4 bytes (8 KB at V = 2048, 0.5 MB at DeepSeek's 129 K) stays in L1/L2 for the second sweep.
static inline float rowLse(const float* x, int64_t V) {
  vf mv = splat(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + VL <= V; j += VL) mv = vmax(mv, ldv(x + j));
  float m = hmax(mv);
  for (; j < V; j++) m = std::max(m, x[j]);
  if (m == -std::numeric_limits<float>::infinity() || m == std::numeric_limits<float>::infinity()) return m;
  vf sv[NV16] = {};
  for (j = 0; j + 16 <= V; j += 16)
    for (int h = 0; h < NV16; h++) sv[h] += vexp(ldv(x + j + VL * h) - m);
  float s = hsum16(sv);
  for (; j < V; j++) s += sexp(x[j] - m);
  return m + std::log(s);
}

// logits (N,V), labels (N) → lse (N) write; returns Σ_valid (lse − logit[label]) as a double. Ignored rows: lse = 0.
// Per-row losses are summed serially in double after the parallel loop, so the result does not depend on threads.
static Napi::Value CrossEntropyFwd(const Napi::CallbackInfo& info) {
  Args a(info, "crossEntropyFwd");
  int64_t N = a.size(3, "N"), V = a.size(4, "V");
  const float* logits = a.f32(0, N * V, "logits");
  const int32_t* labels = a.i32(1, N, "labels");
  float* lse = a.f32(2, N, "lse");
  if (!a.ok || !checkLabels(a, labels, N, V)) return a.env.Undefined();
  std::vector<double> rowLoss(N);
#pragma omp parallel for schedule(static) num_threads(threadsFor(N * V))
  for (int64_t n = 0; n < N; n++) {
    const int32_t y = labels[n];
    if (y == kIgnore) {
      lse[n] = 0.0f;
      rowLoss[n] = 0.0;
      continue;
    }
    const float* x = logits + n * V;
    const float l = rowLse(x, V);
    lse[n] = l;
    rowLoss[n] = (double)l - (double)x[y];
  }
  double loss = 0.0;
  for (int64_t n = 0; n < N; n++) loss += rowLoss[n];
  return Napi::Number::New(a.env, loss);
}

// → dlogits (N,V) write: (softmax − onehot(label)) · scale for valid rows, 0 for ignored rows. dlogits may alias
// logits: the label's logit is read before the row is overwritten, and every other element is read, then written.
// dlogits may be a Uint16Array instead (bf16 compute: the output projection's two backward products read the
// gradient in bf16): each value rounded once as it is stored, so the (N, V) f32 gradient — the largest operand of
// the step — is neither written nor rounded twice inside the products.
template <typename Out>
static void crossEntropyBwd(const float* logits, const int32_t* labels, const float* lse, Out* dl, int64_t N,
                            int64_t V, float scale) {
#pragma omp parallel for schedule(static) num_threads(threadsFor(N * V))
  for (int64_t n = 0; n < N; n++) {
    const int32_t y = labels[n];
    const float* x = logits + n * V;
    Out* d = dl + n * V;
    if (y == kIgnore) {
      std::memset(d, 0, V * sizeof(Out));
      continue;
    }
    const float l = lse[n];
    const float xy = x[y];
    int64_t j = 0;
    for (; j + VL <= V; j += VL) storeAs(d + j, vexp(ldv(x + j) - l) * scale);
    for (; j < V; j++) storeAs(d + j, sexp(x[j] - l) * scale);
    storeAs(d + y, (sexp(xy - l) - 1.0f) * scale);
  }
}

static Napi::Value CrossEntropyBwd(const Napi::CallbackInfo& info) {
  Args a(info, "crossEntropyBwd");
  int64_t N = a.size(4, "N"), V = a.size(5, "V");
  double scaleD = a.num(6, "scale");
  const float* logits = a.f32(0, N * V, "logits");
  const int32_t* labels = a.i32(1, N, "labels");
  const float* lse = a.f32(2, N, "lse");
  const bool bf16 = a.ok && isU16Arg(a, 3);
  float* dl = bf16 ? nullptr : a.f32(3, N * V, "dlogits");
  uint16_t* dl16 = bf16 ? a.u16(3, N * V, "dlogits") : nullptr;
  if (!a.ok || !checkLabels(a, labels, N, V)) return a.env.Undefined();
  if (bf16) crossEntropyBwd(logits, labels, lse, dl16, N, V, (float)scaleD);
  else crossEntropyBwd(logits, labels, lse, dl, N, V, (float)scaleD);
  return a.env.Undefined();
}

void RegisterCrossEntropy(Napi::Env env, Napi::Object exports) {
  exports.Set("crossEntropyFwd", Napi::Function::New(env, CrossEntropyFwd));
  exports.Set("crossEntropyBwd", Napi::Function::New(env, CrossEntropyBwd));
}
