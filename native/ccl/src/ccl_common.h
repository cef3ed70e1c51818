// Shared pieces of the oneCCL binding: its communicator table and typed-array access. oneCCL reports errors as
// C++ exceptions; every entry point catches them and schedules a JS Error naming the call (node-addon-api's own
// exceptions stay disabled, as in native/mpi).
#pragma once
#include <oneapi/ccl.hpp>

#include "../../mpi/src/common.h"

namespace moeccl {

struct CclArray {
  void* data = nullptr;
  size_t length = 0;  // elements
  ccl::datatype type = ccl::datatype::float32;
  const char* typeName = "";
};

// Float32Array, Float64Array, Int32Array, BigInt64Array (int64), Uint16Array (bfloat16 bits: sums happen in bf16).
bool GetArray(Napi::Env env, const Napi::Value& v, const char* name, CclArray* out);
// The communicator behind a handle (from commCreate), or a scheduled JS error and nullptr.
ccl::communicator* GetComm(Napi::Env env, const Napi::Value& v);
bool ThrowCcl(Napi::Env env, const std::string& what, const std::exception& e);

void InitSetup(Napi::Env env, Napi::Object exports);
void InitCollectives(Napi::Env env, Napi::Object exports);

}  // namespace moeccl
