// bf16 on VL-lane vectors (GCC vector extensions): bit casts, widening loads, round-to-nearest-even narrowing
// (NaN stays a quiet NaN), identical to toBf16 / fromBf16 (bf16.cc), for kernels that read or write bf16 arrays.
#pragma once
#include "common.h"
#if MOE_VL == 16
#include <immintrin.h>
#endif

typedef uint32_t vu __attribute__((vector_size(4 * VL)));
typedef uint16_t vh __attribute__((vector_size(2 * VL)));

static inline vu ldu(const uint32_t* p) {
  vu v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
static inline void stu(uint32_t* p, vu v) { __builtin_memcpy(p, &v, sizeof v); }
static inline vf asF(vu u) {
  vf f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}
static inline vu asU(vf f) {
  vu u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
}
static inline float bf16ToF(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f32 lanes → bf16 bits in each lane's low half (round to nearest even; a NaN stays a quiet NaN), as toBf16.
static inline vu roundBf16(vf x) {
  const vu u = asU(x);
  const vu r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return (u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : r;
}
static inline uint16_t roundBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
// VL bf16 at p, widened (exactly) to f32.
static inline vf ldBf16(const uint16_t* p) {
#if MOE_VL == 16
  // One vpmovzxwd from memory (GCC's convertvector split it into two halves and an insert); the maskz form
  // because GCC 12's unmasked one reads an uninitialised register (-Wmaybe-uninitialized in its header).
  return asF((vu)_mm512_maskz_cvtepu16_epi32((__mmask16)-1, _mm256_loadu_si256((const __m256i*)p)) << 16);
#else
  vh h;
  __builtin_memcpy(&h, p, sizeof h);
  return asF(__builtin_convertvector(h, vu) << 16);
#endif
}
// f32 lanes, or one f32, stored as the destination's element type: f32 as it is, bf16 rounded exactly as toBf16
// (nearest even, denormals kept, NaN quiet) — for kernels whose output is f32 or bf16 by a template parameter and
// must equal toBf16 of the f32 result. (stBf16 below is the faster rounding that flushes denormals.)
static inline void storeAs(float* p, vf x) { stv(p, x); }
static inline void storeAs(uint16_t* p, vf x) {
  const vh h = __builtin_convertvector(roundBf16(x), vh);
  __builtin_memcpy(p, &h, sizeof h);
}
static inline void storeAs(float* p, float x) { *p = x; }
static inline void storeAs(uint16_t* p, float x) { *p = roundBf16(x); }
// VL f32 rounded to bf16 at p: one vcvtneps2bf16 with AVX512_BF16 (which also flushes denormals, |x| < 2^-126, to
// zero, as oneDNN's bf16 outputs do), else the integer rounding above (~8 operations).
static inline void stBf16(uint16_t* p, vf x) {
#if defined(__AVX512BF16__) && MOE_VL == 16
  const __m256bh h = _mm512_cvtneps_pbh((__m512)x);
#else
  const vh h = __builtin_convertvector(roundBf16(x), vh);
#endif
  __builtin_memcpy(p, &h, sizeof h);
}
