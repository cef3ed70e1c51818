// sgemm through CBLAS (OpenBLAS by default, MKL with MOE_ACTORS_BLAS=mkl) and thread control.
#include "common.h"
#ifdef MOE_BLAS_MKL
#include <mkl.h>
#else
#include <cblas.h>
#endif
#include <omp.h>

// sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc): row-major C = alpha·op(A)·op(B) + beta·C.
static Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  bool ta = info[0].As<Napi::Boolean>().Value();
  bool tb = info[1].As<Napi::Boolean>().Value();
  int M = (int)Int(info[2]), N = (int)Int(info[3]), K = (int)Int(info[4]);
  float alpha = (float)Num(info[5]);
  float* A = F32(info[6]);
  int lda = (int)Int(info[7]);
  float* B = F32(info[8]);
  int ldb = (int)Int(info[9]);
  float beta = (float)Num(info[10]);
  float* C = F32(info[11]);
  int ldc = (int)Int(info[12]);
  if (M == 0 || N == 0) return info.Env().Undefined();
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
              ldb, beta, C, ldc);
  return info.Env().Undefined();
}

static Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int n = (int)Int(info[0]);
#ifdef MOE_BLAS_MKL
  mkl_set_num_threads(n);
#else
  openblas_set_num_threads(n);
#endif
  omp_set_num_threads(n);
  return info.Env().Undefined();
}

static Napi::Value BlasInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef MOE_BLAS_MKL
  o.Set("name", "mkl");
  o.Set("threads", mkl_get_max_threads());
#else
  o.Set("name", "openblas");
  o.Set("config", openblas_get_config());
  o.Set("corename", openblas_get_corename());
  o.Set("threads", openblas_get_num_threads());
#endif
  o.Set("ompThreads", omp_get_max_threads());
  return o;
}

void RegisterBlas(Napi::Env env, Napi::Object exports) {
  exports.Set("sgemm", Napi::Function::New(env, Sgemm));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("blasInfo", Napi::Function::New(env, BlasInfo));
}
