#include "common.h"

#include <climits>
#include <mutex>

namespace moempi {

namespace {
std::mutex g_mu;
std::vector<MPI_Comm> g_comms;  // index = handle; MPI_COMM_NULL marks a freed slot
}  // namespace

bool ThrowMpi(Napi::Env env, int code, const std::string& what) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  Napi::Error::New(env, what + ": " + std::string(buf, len)).ThrowAsJavaScriptException();
  return false;
}

bool ThrowMsg(Napi::Env env, const std::string& msg) {
  Napi::Error::New(env, msg).ThrowAsJavaScriptException();
  return false;
}

bool GetArray(Napi::Env env, const Napi::Value& v, const char* name, ArrayView* out) {
  if (!v.IsTypedArray()) return ThrowMsg(env, std::string(name) + " must be a Float32Array, Float64Array or Int32Array");
  napi_typedarray_type t;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t offset = 0;
  if (napi_get_typedarray_info(env, v, &t, &length, &data, &ab, &offset) != napi_ok) {
    return ThrowMsg(env, std::string("cannot read typed array ") + name);
  }
  if (length > static_cast<size_t>(INT_MAX)) {
    return ThrowMsg(env, std::string(name) + " has more than 2^31-1 elements, which MPI counts cannot express");
  }
  out->data = data;
  out->length = length;
  switch (t) {
    case napi_float32_array: out->type = MPI_FLOAT; out->typeName = "float32"; break;
    case napi_float64_array: out->type = MPI_DOUBLE; out->typeName = "float64"; break;
    case napi_int32_array: out->type = MPI_INT; out->typeName = "int32"; break;
    // bfloat16 bits: moved as 2-byte integers (all_gather, all_to_all_v, broadcast); never reduced.
    case napi_uint16_array: out->type = MPI_UINT16_T; out->typeName = "bfloat16"; break;
    default: return ThrowMsg(env, std::string(name) + " must be a Float32Array, Float64Array, Int32Array or Uint16Array (bf16)");
  }
  return true;
}

bool GetInt32Vector(Napi::Env env, const Napi::Value& v, const char* name, size_t expected, std::vector<int>* out) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    return ThrowMsg(env, std::string(name) + " must be an Int32Array");
  }
  auto a = v.As<Napi::Int32Array>();
  if (a.ElementLength() != expected) {
    return ThrowMsg(env, std::string(name) + " has " + std::to_string(a.ElementLength()) + " entries, expected " +
                             std::to_string(expected));
  }
  out->assign(a.Data(), a.Data() + a.ElementLength());
  return true;
}

bool GetInt(Napi::Env env, const Napi::Value& v, const char* name, int* out) {
  if (!v.IsNumber()) return ThrowMsg(env, std::string(name) + " must be an integer");
  *out = v.As<Napi::Number>().Int32Value();
  return true;
}

bool MpiReady(Napi::Env env, const char* what) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init) return ThrowMsg(env, std::string(what) + ": MPI is not initialized (call init() first)");
  if (fin) return ThrowMsg(env, std::string(what) + ": MPI was already finalized");
  return true;
}

bool GetComm(Napi::Env env, const Napi::Value& v, MPI_Comm* out) {
  int h = 0;
  if (!GetInt(env, v, "comm", &h)) return false;
  std::lock_guard<std::mutex> lock(g_mu);
  if (h < 0 || static_cast<size_t>(h) >= g_comms.size() || g_comms[h] == MPI_COMM_NULL) {
    return ThrowMsg(env, "unknown or freed communicator handle " + std::to_string(h));
  }
  *out = g_comms[h];
  return true;
}

int AddComm(MPI_Comm c) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (size_t i = 1; i < g_comms.size(); i++) {
    if (g_comms[i] == MPI_COMM_NULL) {
      g_comms[i] = c;
      return static_cast<int>(i);
    }
  }
  g_comms.push_back(c);
  return static_cast<int>(g_comms.size() - 1);
}

bool RemoveComm(int handle, MPI_Comm* out) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (handle <= 0 || static_cast<size_t>(handle) >= g_comms.size() || g_comms[handle] == MPI_COMM_NULL) return false;
  *out = g_comms[handle];
  g_comms[handle] = MPI_COMM_NULL;
  return true;
}

}  // namespace moempi
