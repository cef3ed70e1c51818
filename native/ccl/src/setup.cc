// oneCCL's process state: init (after MPI, which it uses as its transport), key-value stores and communicators.
// A communicator is created from a KVS whose "main" side lives on the group's first member; the JS side carries
// the main KVS address to the other members over MPI (a polled, timed broadcast) before they all call commCreate,
// which blocks until every member has called it.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unistd.h>

#include "ccl_common.h"

namespace moeccl {

namespace {

struct Entry {
  ccl::shared_ptr_class<ccl::kvs> kvs;
  std::unique_ptr<ccl::communicator> comm;
};

std::mutex g_mu;
std::vector<Entry> g_comms(1);  // index = handle; handle 0 is never used, an empty comm marks a freed slot
std::vector<ccl::shared_ptr_class<ccl::kvs>> g_kvs(1);
bool g_inited = false;

// Debian names MPICH's ABI-compatible library libmpich.so.12; oneCCL opens libmpi.so.12 unless told otherwise.
constexpr const char* kDebianMpich = "/usr/lib/x86_64-linux-gnu/libmpich.so.12";

Napi::Object InfoObject(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  auto v = ccl::get_library_version();
  o.Set("version", std::string(v.full ? v.full : ""));
  const char* atl = std::getenv("CCL_ATL_TRANSPORT");
  const char* lib = std::getenv("CCL_MPI_LIBRARY_PATH");
  o.Set("atlTransport", atl ? atl : "");
  o.Set("mpiLibrary", lib ? lib : "");
  return o;
}

// MPI must be initialized first (init() of the MPI part, with MPI_THREAD_MULTIPLE): oneCCL's MPI transport then
// uses that MPI instead of initializing its own.
Napi::Value CclInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_inited) return InfoObject(env);
  if (!moempi::MpiReady(env, "cclInit")) return env.Undefined();
  // The user's own settings win (setenv's overwrite = 0).
  setenv("CCL_ATL_TRANSPORT", "mpi", 0);
  if (access(kDebianMpich, R_OK) == 0) setenv("CCL_MPI_LIBRARY_PATH", kDebianMpich, 0);
  try {
    ccl::init();
  } catch (const std::exception& e) {
    ThrowCcl(env, "ccl::init", e);
    return env.Undefined();
  }
  g_inited = true;
  return InfoObject(env);
}

bool Ready(Napi::Env env, const char* what) {
  if (!g_inited) return moempi::ThrowMsg(env, std::string(what) + ": oneCCL is not initialized (call cclInit() first)");
  return true;
}

Napi::Value KvsMain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(g_mu);
  if (!Ready(env, "kvsMain")) return env.Undefined();
  try {
    auto kvs = ccl::create_main_kvs();
    auto addr = kvs->get_address();
    auto out = Napi::Int32Array::New(env, addr.size() / 4);
    std::memcpy(out.Data(), addr.data(), addr.size());
    g_kvs.push_back(kvs);
    Napi::Object o = Napi::Object::New(env);
    o.Set("kvs", static_cast<double>(g_kvs.size() - 1));
    o.Set("address", out);
    return o;
  } catch (const std::exception& e) {
    ThrowCcl(env, "ccl::create_main_kvs", e);
    return env.Undefined();
  }
}

Napi::Value KvsJoin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(g_mu);
  if (!Ready(env, "kvsJoin")) return env.Undefined();
  ccl::kvs::address_type addr;
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      info[0].As<Napi::Int32Array>().ElementLength() * 4 != addr.size()) {
    moempi::ThrowMsg(env, "kvsJoin(address: Int32Array of " + std::to_string(addr.size() / 4) + ")");
    return env.Undefined();
  }
  std::memcpy(addr.data(), info[0].As<Napi::Int32Array>().Data(), addr.size());
  try {
    g_kvs.push_back(ccl::create_kvs(addr));
    return Napi::Number::New(env, static_cast<double>(g_kvs.size() - 1));
  } catch (const std::exception& e) {
    ThrowCcl(env, "ccl::create_kvs", e);
    return env.Undefined();
  }
}

// Blocking and collective over the group: the JS side calls it only once every member holds the KVS address.
// The KVS moves into the communicator's entry (it must outlive the communicator).
Napi::Value CommCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int size = 0, rank = 0, k = 0;
  if (info.Length() < 3 || !moempi::GetInt(env, info[0], "size", &size) || !moempi::GetInt(env, info[1], "rank", &rank) ||
      !moempi::GetInt(env, info[2], "kvs", &k)) {
    return env.Undefined();
  }
  ccl::shared_ptr_class<ccl::kvs> kvs;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!Ready(env, "commCreate")) return env.Undefined();
    if (k <= 0 || static_cast<size_t>(k) >= g_kvs.size() || !g_kvs[k]) {
      moempi::ThrowMsg(env, "commCreate: unknown or used kvs handle " + std::to_string(k));
      return env.Undefined();
    }
    kvs = std::move(g_kvs[k]);
    g_kvs[k].reset();
  }
  if (size < 1 || rank < 0 || rank >= size) {
    moempi::ThrowMsg(env, "commCreate: rank " + std::to_string(rank) + " is not in 0.." + std::to_string(size - 1));
    return env.Undefined();
  }
  std::unique_ptr<ccl::communicator> comm;
  try {
    comm = std::make_unique<ccl::communicator>(ccl::create_communicator(size, rank, kvs));
  } catch (const std::exception& e) {
    ThrowCcl(env, "ccl::create_communicator", e);
    return env.Undefined();
  }
  std::lock_guard<std::mutex> lock(g_mu);
  for (size_t i = 1; i < g_comms.size(); i++) {
    if (!g_comms[i].comm) {
      g_comms[i] = Entry{std::move(kvs), std::move(comm)};
      return Napi::Number::New(env, static_cast<double>(i));
    }
  }
  g_comms.push_back(Entry{std::move(kvs), std::move(comm)});
  return Napi::Number::New(env, static_cast<double>(g_comms.size() - 1));
}

Napi::Value CommFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int h = 0;
  if (info.Length() < 1 || !moempi::GetInt(env, info[0], "comm", &h)) return env.Undefined();
  Entry gone;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (h <= 0 || static_cast<size_t>(h) >= g_comms.size() || !g_comms[h].comm) {
      moempi::ThrowMsg(env, "cclCommFree: unknown or already freed communicator handle " + std::to_string(h));
      return env.Undefined();
    }
    gone = std::move(g_comms[h]);
    g_comms[h] = Entry{};
  }
  try {
    gone.comm.reset();
    gone.kvs.reset();
  } catch (const std::exception& e) {
    ThrowCcl(env, "ccl::communicator destruction", e);
  }
  return env.Undefined();
}

}  // namespace

ccl::communicator* GetComm(Napi::Env env, const Napi::Value& v) {
  int h = 0;
  if (!moempi::GetInt(env, v, "comm", &h)) return nullptr;
  std::lock_guard<std::mutex> lock(g_mu);
  if (h <= 0 || static_cast<size_t>(h) >= g_comms.size() || !g_comms[h].comm) {
    moempi::ThrowMsg(env, "unknown or freed oneCCL communicator handle " + std::to_string(h));
    return nullptr;
  }
  return g_comms[h].comm.get();
}

bool ThrowCcl(Napi::Env env, const std::string& what, const std::exception& e) {
  return moempi::ThrowMsg(env, what + ": " + e.what());
}

bool GetArray(Napi::Env env, const Napi::Value& v, const char* name, CclArray* out) {
  const std::string kinds = " must be a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint16Array (bf16)";
  if (!v.IsTypedArray()) return moempi::ThrowMsg(env, std::string(name) + kinds);
  napi_typedarray_type t;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t offset = 0;
  if (napi_get_typedarray_info(env, v, &t, &length, &data, &ab, &offset) != napi_ok) {
    return moempi::ThrowMsg(env, std::string("cannot read typed array ") + name);
  }
  out->data = data;
  out->length = length;
  switch (t) {
    case napi_float32_array: out->type = ccl::datatype::float32; out->typeName = "float32"; break;
    case napi_float64_array: out->type = ccl::datatype::float64; out->typeName = "float64"; break;
    case napi_int32_array: out->type = ccl::datatype::int32; out->typeName = "int32"; break;
    case napi_bigint64_array: out->type = ccl::datatype::int64; out->typeName = "int64"; break;
    case napi_uint16_array: out->type = ccl::datatype::bfloat16; out->typeName = "bfloat16"; break;
    default: return moempi::ThrowMsg(env, std::string(name) + kinds);
  }
  return true;
}

void InitSetup(Napi::Env env, Napi::Object exports) {
  exports.Set("cclInit", Napi::Function::New(env, CclInit));
  exports.Set("kvsMain", Napi::Function::New(env, KvsMain));
  exports.Set("kvsJoin", Napi::Function::New(env, KvsJoin));
  exports.Set("cclCommCreate", Napi::Function::New(env, CommCreate));
  exports.Set("cclCommFree", Napi::Function::New(env, CommFree));
}

}  // namespace moeccl
