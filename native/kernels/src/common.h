// Shared helpers for the kernels addon: typed-array access without copies, argument checks.
#pragma once
#include <napi.h>
#include <cstdint>
#include <string>

inline float* F32(const Napi::Value& v) {
  auto a = v.As<Napi::Float32Array>();
  return a.Data();
}
inline size_t F32Len(const Napi::Value& v) { return v.As<Napi::Float32Array>().ElementLength(); }
inline int32_t* I32(const Napi::Value& v) { return v.As<Napi::Int32Array>().Data(); }
inline size_t I32Len(const Napi::Value& v) { return v.As<Napi::Int32Array>().ElementLength(); }
inline int64_t Int(const Napi::Value& v) { return v.As<Napi::Number>().Int64Value(); }
inline double Num(const Napi::Value& v) { return v.As<Napi::Number>().DoubleValue(); }

void RegisterBlas(Napi::Env env, Napi::Object exports);
