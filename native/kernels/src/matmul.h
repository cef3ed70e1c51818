// The matmul layer between the sgemm entry point and the two libraries that can compute it: a CBLAS (OpenBLAS or
// MKL, blas.cc) and oneDNN (dnnl.cc, when the build found it). Which one runs is chosen per call from the shape
// class (matmulUseDnnl), see dnnl.cc for the rule and docs/benchmarks.md for the measurements behind it.
#pragma once
#include <cstdint>
#include <string>

// Row-major C (M,N) = alpha·op(A)·op(B) + beta·C through the CBLAS (blas.cc). Arguments already checked.
void blasSgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The dispatcher behind the sgemm export: oneDNN or BLAS per the mode and the shape class.
void matmulF32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same through oneDNN; false if oneDNN is absent or refused the shape (the caller then uses BLAS).
bool dnnlSgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// C (M,N) f32 = alpha·op(A)·op(B) + beta·C with A, B bfloat16 (raw uint16 bits), products accumulated in f32.
// false if oneDNN is absent or refused the shape.
bool dnnlGemmBf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                  const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same with C written in bf16 (rounded to nearest even as the primitive stores it), alpha 1, beta 0.
bool dnnlGemmBf16Out(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                     const uint16_t* B, int64_t ldb, uint16_t* C, int64_t ldc);

// Which library the dispatcher uses: 0 = by shape class (default), 1 = always oneDNN, 2 = always BLAS.
enum MatmulMode { kMatmulAuto = 0, kMatmulDnnl = 1, kMatmulBlas = 2 };
void setMatmulMode(MatmulMode m);
MatmulMode matmulMode();
// The shape-class rule of the auto mode: true = oneDNN.
bool matmulUseDnnl(bool ta, bool tb, int64_t M, int64_t N, int64_t K);
bool dnnlAvailable();
// Empty when available; else why not (for the one start-up line).
std::string dnnlStatus();
std::string dnnlVersion();
// oneDNN's effective CPU ISA name ("avx512_core_bf16", …) and whether it has native bf16 dot products.
std::string dnnlIsa();
bool cpuHasBf16Dot();
