// sgemm through CBLAS (OpenBLAS by default, MKL with MOE_ACTORS_BLAS=mkl) and thread control.
//
// OpenBLAS is loaded with dlopen, not linked. Reason: a DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernels from
// the CPU model when the library initialises, and falls back to generic SSE3 "Prescott" kernels on a CPU model it
// does not know — on this project's VMs (e.g. an Emerald Rapids Xeon with OpenBLAS 0.3.21) that is 5–10× slower
// than its AVX-512 kernels. A linked library initialises before any addon code runs, so the only place to choose
// is before a dlopen. Policy: an OPENBLAS_CORETYPE set by the user is respected; otherwise the choice is made from
// the ISA (AVX-512 F/BW/VL/DQ/CD → SkylakeX, the sgemm kernel OpenBLAS itself uses on every AVX-512 core it
// recognises; AVX2+FMA → Haswell), written to the process environment (so it is visible, and children agree),
// and reported by blasInfo() as coretypeSource "auto".
//
// OPENBLAS_THREAD_TIMEOUT (the same policy: a user's value is respected, else chosen here before the dlopen, which
// is when OpenBLAS reads it): after each call, OpenBLAS's idle worker threads spin (sched_yield loop) for
// 2^timeout cycles before sleeping. The default, 2^28 (~0.1 s), outlasts the fused OpenMP kernels that run between
// a model's sgemms, so their threads share the cores with spinning BLAS workers. 2^20 (~0.3 ms) still covers the
// gaps between back-to-back sgemms. Measured on the Llama4 debugmodel train step (batch 4 × 512, 2 threads,
// alternating processes): 555–567 ms per step at 28, 498–538 ms at 4…22. The addon's blasInfo() reports
// threadTimeout and threadTimeoutSource ("env" or "auto"); the value is also visible in the process environment.
#include "common.h"
#include "gemm_args.h"
#include "matmul.h"
#ifdef MOE_BLAS_MKL
#include <mkl.h>
#else
#include <cblas.h>
#include <dlfcn.h>
#endif
#include <mutex>

#ifndef MOE_BLAS_MKL
namespace {
struct OpenBlas {
  decltype(&cblas_sgemm) sgemm = nullptr;
  decltype(&openblas_set_num_threads) setThreads = nullptr;
  decltype(&openblas_get_num_threads) getThreads = nullptr;
  decltype(&openblas_get_corename) corename = nullptr;
  decltype(&openblas_get_config) config = nullptr;
  std::string path, error, coretypeSource, threadTimeout, threadTimeoutSource;
};
OpenBlas g;
std::once_flag loadOnce;

const char* coretypeForIsa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

void loadOpenBlas() {
  const char* ct = std::getenv("OPENBLAS_CORETYPE");
  if (ct && *ct) {
    g.coretypeSource = "env";
  } else if (const char* pick = coretypeForIsa()) {
    setenv("OPENBLAS_CORETYPE", pick, 0);
    g.coretypeSource = "auto";
  } else {
    g.coretypeSource = "openblas";
  }
  if (const char* to = std::getenv("OPENBLAS_THREAD_TIMEOUT"); to && *to) {
    g.threadTimeout = to;
    g.threadTimeoutSource = "env";
  } else {
    setenv("OPENBLAS_THREAD_TIMEOUT", "20", 0);
    g.threadTimeout = "20";
    g.threadTimeoutSource = "auto";
  }
  const std::string candidates[] = {std::string(MOE_OPENBLAS_LIBDIR) + "/libopenblas.so.0", "libopenblas.so.0"};
  void* h = nullptr;
  std::string errors;
  for (const auto& c : candidates) {
    h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (h) {
      g.path = c;
      break;
    }
    errors += std::string("\n  ") + dlerror();
  }
  if (!h) {
    g.error = "cannot load OpenBLAS:" + errors +
              "\n  Fix: apt-get install libopenblas0-pthread libopenblas-dev, then `npm run build:native kernels`.";
    return;
  }
  g.sgemm = (decltype(g.sgemm))dlsym(h, "cblas_sgemm");
  g.setThreads = (decltype(g.setThreads))dlsym(h, "openblas_set_num_threads");
  g.getThreads = (decltype(g.getThreads))dlsym(h, "openblas_get_num_threads");
  g.corename = (decltype(g.corename))dlsym(h, "openblas_get_corename");
  g.config = (decltype(g.config))dlsym(h, "openblas_get_config");
  if (!g.sgemm || !g.setThreads || !g.getThreads || !g.corename || !g.config)
    g.error = "the library at " + g.path + " lacks cblas_sgemm or the openblas_* thread/info functions; is it OpenBLAS?";
}
}  // namespace
#endif

void blasSgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
#ifdef MOE_BLAS_MKL
  cblas_sgemm(
#else
  g.sgemm(
#endif
      CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A,
      (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

// Whether an f32 product goes to oneDNN: when forced, or in auto mode where the rule says it is faster there.
static bool f32OnDnnl(bool ta, bool tb, int64_t M, int64_t N, int64_t K) {
  const MatmulMode mode = matmulMode();
  return mode == kMatmulDnnl || (mode == kMatmulAuto && matmulUseDnnl(ta, tb, M, N, K));
}

// The library per call: oneDNN where f32OnDnnl says so, else BLAS; BLAS also whenever oneDNN is absent or declines.
void matmulF32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (f32OnDnnl(ta, tb, M, N, K) && dnnlSgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  blasSgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc): row-major C (M,N) = alpha·op(A)·op(B) + beta·C,
// op(A) (M,K), op(B) (K,N). Lengths are checked against the strides so BLAS never reads or writes out of bounds.
static Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Args a(info, "sgemm");
  GemmArgs g;
  float *A = nullptr, *B = nullptr, *C = nullptr;
  if (readGemmArgs(a, g, A, B, C)) matmulF32(g.ta, g.tb, g.M, g.N, g.K, g.alpha, A, g.lda, B, g.ldb, g.beta, C, g.ldc);
  return a.env.Undefined();
}

// openblas_set_num_threads is process-global (one OpenBLAS thread pool per process); omp_set_num_threads sets
// the calling thread's team size for the fused kernels only. So with the threads transport, the last rank to
// call this decides BLAS's count for all ranks — ranks of one job pass the same n.
static Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Args a(info, "setNumThreads");
  int64_t n = a.size(0, "n");
  if (a.ok && n < 1) a.fail("n must be ≥ 1");
  if (!a.ok) return a.env.Undefined();
#ifdef MOE_BLAS_MKL
  mkl_set_num_threads((int)n);
#else
  g.setThreads((int)n);
#endif
  omp_set_num_threads((int)n);
  return a.env.Undefined();
}

// OMP_WAIT_POLICY when the addon was first loaded, i.e. when libgomp (a load-time dependency) read it.
static std::once_flag ompOnce;
static std::string ompWaitPolicy;
static bool ompWaitPolicySet = false;

static Napi::Value BlasInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef MOE_BLAS_MKL
  o.Set("name", "mkl");
  o.Set("threads", mkl_get_max_threads());
#else
  o.Set("name", "openblas");
  o.Set("config", g.config());
  o.Set("corename", g.corename());
  o.Set("threads", g.getThreads());
  o.Set("coretypeSource", g.coretypeSource);
  o.Set("threadTimeout", g.threadTimeout);
  o.Set("threadTimeoutSource", g.threadTimeoutSource);
  o.Set("path", g.path);
#endif
  o.Set("ompThreads", omp_get_max_threads());
  const MatmulMode mode = matmulMode();
  o.Set("matmulMode", mode == kMatmulAuto ? "auto" : mode == kMatmulDnnl ? "onednn" : "blas");
  // The library f32 matmuls take in this process (auto's rule depends on the ISA only, so any shape answers).
  o.Set("f32Matmuls", dnnlAvailable() && f32OnDnnl(false, false, 1, 1, 1) ? "onednn" : "blas");
  o.Set("onednn", dnnlAvailable());
  if (dnnlAvailable()) {
    o.Set("onednnVersion", dnnlVersion());
    o.Set("onednnIsa", dnnlIsa());
  } else {
    o.Set("onednnStatus", dnnlStatus());
  }
  o.Set("bf16Dot", cpuHasBf16Dot());
  if (ompWaitPolicySet) o.Set("ompWaitPolicy", ompWaitPolicy);
  return o;
}

static bool parseMatmulMode(const std::string& v, MatmulMode* out) {
  if (v == "auto") *out = kMatmulAuto;
  else if (v == "onednn") *out = kMatmulDnnl;
  else if (v == "blas") *out = kMatmulBlas;
  else return false;
  return true;
}

// setMatmulLibrary("auto" | "onednn" | "blas"): process-wide (benches alternate libraries in one process).
static Napi::Value SetMatmulLibrary(const Napi::CallbackInfo& info) {
  Args a(info, "setMatmulLibrary");
  Napi::Value v = a.arg(0);
  if (!a.ok) return a.env.Undefined();
  MatmulMode m;
  if (!v.IsString() || !parseMatmulMode(v.As<Napi::String>().Utf8Value(), &m)) {
    a.fail("library must be \"auto\", \"onednn\" or \"blas\"");
    return a.env.Undefined();
  }
  setMatmulMode(m);
  return a.env.Undefined();
}

static std::once_flag modeOnce;
static std::string modeError;

bool RegisterBlas(Napi::Env env, Napi::Object exports) {
  // MOE_ACTORS_MATMUL chooses the matmul library for the process (default auto = by shape class).
  std::call_once(modeOnce, [] {
    const char* v = std::getenv("MOE_ACTORS_MATMUL");
    MatmulMode m = kMatmulAuto;
    if (v && *v && !parseMatmulMode(v, &m))
      modeError = std::string("MOE_ACTORS_MATMUL=") + v + " is not a matmul library; use auto (default), onednn or blas";
    setMatmulMode(m);
  });
  if (!modeError.empty()) {
    Napi::Error::New(env, "moe-actors native kernels: " + modeError).ThrowAsJavaScriptException();
    return false;
  }
  std::call_once(ompOnce, [] {
    const char* p = std::getenv("OMP_WAIT_POLICY");
    if (p) ompWaitPolicy = p, ompWaitPolicySet = true;
  });
#ifndef MOE_BLAS_MKL
  std::call_once(loadOnce, loadOpenBlas);
  if (!g.error.empty()) {
    Napi::Error::New(env, "moe-actors native kernels: " + g.error).ThrowAsJavaScriptException();
    return false;
  }
#endif
  exports.Set("sgemm", Napi::Function::New(env, Sgemm));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("blasInfo", Napi::Function::New(env, BlasInfo));
  exports.Set("setMatmulLibrary", Napi::Function::New(env, SetMatmulLibrary));
  return true;
}
