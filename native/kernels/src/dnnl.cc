// Matmuls through oneDNN (Debian's libdnnl-dev, 2.x API), when the build found it (MOE_HAVE_DNNL).
//
// Why oneDNN beside a CBLAS: on AVX-512 machines its brgemm kernels run f32 GEMMs of this project's shapes ~1.5–2×
// faster than OpenBLAS with the core type this environment runs (docs/benchmarks.md, bench:kernels), and it is
// the only library here with bf16-input, f32-accumulate matmuls (avx512_core_bf16 / AMX), which mixed precision
// needs. It is what PyTorch's CPU path uses.
//
// Primitives are cached per thread (each rank of the threads transport is a worker thread with its own OpenMP
// team size) and per shape: strides, transposes, alpha/beta and the thread count all shape the JIT kernels. A
// primitive of a new shape costs ~0.05–0.3 ms to create (measured); MoE expert GEMMs change M every step, so the
// cache is bounded and cleared when full rather than grown without end.
//
// Thread count: oneDNN's OpenMP runtime (the Debian build's, the same libgomp as the fused kernels) runs a call
// on the calling thread's omp_get_max_threads(), which setNumThreads sets per rank.
#include "matmul.h"
#include "common.h"
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

static std::atomic<int> gMode{kMatmulAuto};
void setMatmulMode(MatmulMode m) { gMode.store((int)m); }
MatmulMode matmulMode() { return (MatmulMode)gMode.load(); }

// MOE_ACTORS_BF16_DOT=0 takes the path of a CPU without bf16 dot products on one that has them (widened operands,
// f32 kernels), so that path's numerics and memory are testable on any machine; it cannot switch them on.
bool cpuHasBf16Dot() {
  static const bool has = [] {
    const char* v = std::getenv("MOE_ACTORS_BF16_DOT");
    if (v && v[0] == '0' && v[1] == 0) return false;
    __builtin_cpu_init();
    return (bool)(__builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16"));
  }();
  return has;
}

#ifdef MOE_HAVE_DNNL
#include <dnnl.hpp>

namespace {
using dnnl::memory;
using dt = memory::data_type;

struct Key {
  int64_t M, N, K, lda, ldb, ldc;
  uint32_t alphaBits, betaBits;
  int threads;
  uint8_t ta, tb, bf16;
  // The row dimension (M, or K for a transposed A: the weight-gradient product) left to run time: one primitive
  // serves every row count (runtimeRows below); the key's M or K is then -1.
  uint8_t rtRows = 0;
  // C in bf16 (rounded by the primitive as it writes: one pass instead of an f32 write, a read and a narrow).
  uint8_t outBf16 = 0;
  bool operator==(const Key& o) const {
    return M == o.M && N == o.N && K == o.K && lda == o.lda && ldb == o.ldb && ldc == o.ldc &&
           alphaBits == o.alphaBits && betaBits == o.betaBits && threads == o.threads && ta == o.ta && tb == o.tb &&
           bf16 == o.bf16 && rtRows == o.rtRows && outBf16 == o.outBf16;
  }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(k.M), mix(k.N), mix(k.K), mix(k.lda), mix(k.ldb), mix(k.ldc), mix(k.alphaBits), mix(k.betaBits);
    mix(k.threads), mix(k.ta | (k.tb << 1) | (k.bf16 << 2) | (k.rtRows << 3) | (k.outBf16 << 4));
    return (size_t)h;
  }
};
struct Entry {
  dnnl::matmul prim;
  memory a, b, c;
  // The shape goes to BLAS: oneDNN would run it on its f32 gemm:jit kernels (see signalUnsafe below).
  bool toBlas = false;
};

struct State {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::unordered_map<Key, Entry, KeyHash> cache;
};
constexpr size_t kCacheMax = 1024;

// Per thread: engines are cheap, and a per-thread stream and cache keep ranks in worker threads independent.
State& state() {
  thread_local State s;
  return s;
}

std::string gStatus;  // set once if oneDNN fails at run time (then every call falls back)
std::atomic<bool> gBroken{false};

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// oneDNN's f32 "gemm:jit" kernels (jit_avx512_common_gemm_f32 / jit_avx_gemm_f32, chosen for strided operands such
// as MLA's per-head slices, where brgemm declines) point rsp into a heap workspace while they run; a signal
// delivered then (a profiler's SIGPROF, a SIGTERM handled by libuv) writes its frame into the heap and corrupts
// it — `node --cpu-prof` on a DeepSeek-V3 run aborted with "corrupted size vs. prev_size" every time. oneDNN fixed
// it in 3.11.1 (uxlfoundation/oneDNN#4845, PR #4855); Debian ships 2.6. Such shapes go to BLAS instead. The bf16
// gemm kernels keep rsp on the stack and stay (test/kernels/signals.test.ts runs both under a 100 µs profiler).
bool signalUnsafe(const Key& k, const dnnl::matmul::primitive_desc& pd) {
  return !k.bf16 && std::string(pd.impl_info_str()).rfind("gemm:jit", 0) == 0;
}

// op(A) (M,K): row-major with leading dimension lda, or its transpose stored (K,M); same for op(B) (K,N).
Entry* entryFor(const Key& k) {
  State& s = state();
  auto it = s.cache.find(k);
  if (it != s.cache.end()) return &it->second;
  const dt in = k.bf16 ? dt::bf16 : dt::f32;
  const int64_t M = k.M < 0 ? DNNL_RUNTIME_DIM_VAL : k.M, K = k.K < 0 ? DNNL_RUNTIME_DIM_VAL : k.K;
  memory::desc a({M, K}, in, k.ta ? memory::dims{1, k.lda} : memory::dims{k.lda, 1});
  memory::desc b({K, k.N}, in, k.tb ? memory::dims{1, k.ldb} : memory::dims{k.ldb, 1});
  memory::desc c({M, k.N}, k.outBf16 ? dt::bf16 : dt::f32, memory::dims{k.ldc, 1});
  dnnl::primitive_attr attr;
  float alpha, beta;
  std::memcpy(&alpha, &k.alphaBits, 4);
  std::memcpy(&beta, &k.betaBits, 4);
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(beta);
    attr.set_post_ops(po);
  }
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, s.eng);
  if (s.cache.size() >= kCacheMax) s.cache.clear();
  if (signalUnsafe(k, pd)) {
    Entry e{dnnl::matmul(), memory(), memory(), memory()};
    e.toBlas = true;
    return &s.cache.emplace(k, std::move(e)).first->second;
  }
  // A runtime-rows primitive gets its memory objects per call (their dims are the call's).
  Entry e = k.rtRows ? Entry{dnnl::matmul(pd), memory(), memory(), memory()}
                     : Entry{dnnl::matmul(pd), memory(a, s.eng, nullptr), memory(b, s.eng, nullptr),
                             memory(c, s.eng, nullptr)};
  return &s.cache.emplace(k, std::move(e)).first->second;
}

// A runtime-rows primitive executes on memory objects of the call's real dims (same strides).
void runRuntimeRows(const Key& k, int64_t M, int64_t K, const void* A, const void* B, void* C) {
  Entry* e = entryFor(k);
  State& s = state();
  const dt in = dt::bf16;
  memory a({{M, K}, in, k.ta ? memory::dims{1, k.lda} : memory::dims{k.lda, 1}}, s.eng, const_cast<void*>(A));
  memory b({{K, k.N}, in, k.tb ? memory::dims{1, k.ldb} : memory::dims{k.ldb, 1}}, s.eng, const_cast<void*>(B));
  memory c({{M, k.N}, k.outBf16 ? dt::bf16 : dt::f32, memory::dims{k.ldc, 1}}, s.eng, C);
  e->prim.execute(s.strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
  s.strm.wait();
}

std::atomic<bool> gNoRuntimeRows{false};  // set once if this oneDNN cannot make a runtime-rows primitive

bool run(const Key& k, const void* A, const void* B, void* C) {
  if (gBroken.load(std::memory_order_relaxed)) return false;
  if (k.rtRows) {
    // Optional: a build that cannot make it (or fails in it) takes the per-shape primitive instead, quietly.
    if (!gNoRuntimeRows.load(std::memory_order_relaxed)) try {
        Key r = k;
        (k.ta ? r.K : r.M) = -1;
        runRuntimeRows(r, k.M, k.K, A, B, C);
        return true;
      } catch (const dnnl::error&) {
        gNoRuntimeRows.store(true);
      }
    Key f = k;
    f.rtRows = 0;
    return run(f, A, B, C);
  }
  try {
    Entry* e = entryFor(k);
    if (e->toBlas) return false;
    e->a.set_data_handle(const_cast<void*>(A));
    e->b.set_data_handle(const_cast<void*>(B));
    e->c.set_data_handle(C);
    State& s = state();
    e->prim.execute(s.strm, {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}});
    s.strm.wait();
    return true;
  } catch (const dnnl::error& err) {
    // Say it once, then use BLAS for the rest of the process: a library that failed on one shape is not trusted.
    if (!gBroken.exchange(true)) {
      gStatus = std::string("oneDNN failed (") + err.what() + "); using BLAS for every matmul from now on";
      std::fprintf(stderr, "moe-actors: %s\n", gStatus.c_str());
    }
    return false;
  }
}

Key keyOf(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, int64_t lda, int64_t ldb, float beta,
          int64_t ldc, bool bf16) {
  return Key{M, N, K, lda, ldb, ldc, bits(alpha), bits(beta), omp_get_max_threads(), (uint8_t)ta, (uint8_t)tb,
             (uint8_t)bf16};
}
}  // namespace

bool dnnlAvailable() { return !gBroken.load(); }
std::string dnnlStatus() { return gStatus; }
std::string dnnlVersion() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}
std::string dnnlIsa() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

bool dnnlSgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (K == 0) return false;  // C = beta·C: BLAS handles the empty product; oneDNN rejects zero-size K
  return run(keyOf(ta, tb, M, N, K, alpha, lda, ldb, beta, ldc, false), A, B, C);
}

// Row counts that change from step to step (MoE expert GEMMs: M of the forward and input-gradient products, K of
// the weight-gradient product, whose transposed A is the expert's rows) would create a primitive per step per
// expert: 0.15–0.4 ms each, 2–5× the product itself at the debugmodel's expert shapes (measured with a standalone
// probe, oneDNN 2.6, 2 threads). A primitive with the row count left to run time serves them all; 2.6 implements
// it with its bf16 gemm:jit instead of brgemm, ~5–10 % slower per call. The rule is a function of the shape alone
// (so a run and its resume compute the same bits): row counts that are a multiple of 64 — every dense product,
// rows = batch·seq — keep their exact-shape brgemm primitive; any other row count takes the runtime one. bf16 only:
// the f32 path's bits stay those of the exact-shape primitives.
static bool runtimeRows(bool ta, int64_t M, int64_t K) { return (ta ? K : M) % 64 != 0; }

bool dnnlGemmBf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                  const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (K == 0) return false;
  Key k = keyOf(ta, tb, M, N, K, alpha, lda, ldb, beta, ldc, true);
  k.rtRows = runtimeRows(ta, M, K);
  return run(k, A, B, C);
}

bool dnnlGemmBf16Out(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                     const uint16_t* B, int64_t ldb, uint16_t* C, int64_t ldc) {
  if (K == 0) return false;
  Key k = keyOf(ta, tb, M, N, K, 1.0f, lda, ldb, 0.0f, ldc, true);
  k.rtRows = runtimeRows(ta, M, K);
  k.outBf16 = 1;
  return run(k, A, B, C);
}

#else  // no oneDNN in this build

bool dnnlAvailable() { return false; }
std::string dnnlStatus() {
  return "oneDNN was not found when the kernels were built (no `pkg-config dnnl`, no dnnl.hpp/libdnnl.so on the "
         "default paths); matmuls use BLAS. Fix: apt-get install libdnnl-dev, then `npm run build:native kernels`.";
}
std::string dnnlVersion() { return ""; }
std::string dnnlIsa() { return ""; }
bool dnnlSgemm(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
               float*, int64_t) {
  return false;
}
bool dnnlGemmBf16(bool, bool, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t, const uint16_t*, int64_t,
                  float, float*, int64_t) {
  return false;
}
bool dnnlGemmBf16Out(bool, bool, int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t,
                     uint16_t*, int64_t) {
  return false;
}
#endif

// The per-shape-class rule of the auto mode. bench:kernels times the model's classes (attention projections
// 2048×256×256, wide 2048×{512,768,2048}×256, skinny expert GEMMs of ~256–320 rows, square 1024³; each as forward,
// backward-input and backward-weight product) on both libraries, alternating, with OpenBLAS 0.3.21 as this
// environment runs it (OPENBLAS_CORETYPE=Haswell). The answer depends on the ISA oneDNN runs on, not on the class:
// - AVX-512 (AMD EPYC with AVX512_BF16): oneDNN f32 (brgemm avx512_core) was faster in every class, 1.6–2.2×.
// - AVX2 only (AMD EPYC, no AVX-512): oneDNN f32 (jit avx2) was 0.89 / 0.91 / 0.99 / 0.99× OpenBLAS (attention,
//   wide, expert, square; quiet) and the debugmodel trained at 0.935 / 0.952× — there both run AVX2 FMA kernels and
//   OpenBLAS's Haswell ones are the better tuned.
// So auto means oneDNN where oneDNN runs AVX-512 code, else BLAS (docs/benchmarks.md has the figures). oneDNN's
// own ISA detection decides, read once; src/tensor/cpu-features.ts makes the same test before the addon loads.
// Without oneDNN everything is BLAS anyway. MOE_ACTORS_MATMUL=blas|onednn overrides the rule for a process.
bool matmulUseDnnl(bool ta, bool tb, int64_t M, int64_t N, int64_t K) {
  (void)ta, (void)tb, (void)M, (void)N, (void)K;
  static const bool avx512 = dnnlIsa().rfind("avx512", 0) == 0;
  return avx512;
}
