// Process-level MPI: init (THREAD_MULTIPLE requested, what was provided recorded), node identification, the
// communicator table (split, free, info), finalize and abort.
#include <mutex>

#include "common.h"

namespace moempi {

namespace {

std::mutex g_init_mu;
bool g_have_info = false;
int g_provided = 0;
int g_rank = 0, g_size = 1, g_local_rank = 0, g_local_size = 1, g_node_leader = 0;
std::string g_processor;

const char* ThreadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "single";
    case MPI_THREAD_FUNNELED: return "funneled";
    case MPI_THREAD_SERIALIZED: return "serialized";
    case MPI_THREAD_MULTIPLE: return "multiple";
    default: return "unknown";
  }
}

// Which ranks share memory with this one: MPI_Comm_split_type(SHARED) is collective over WORLD, so it runs once,
// inside init, when every rank is starting anyway. The node is named by the world rank of its first member, found
// with a local group translation (no further communication).
bool IdentifyNode(Napi::Env env) {
  MPI_Comm shm;
  int rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &shm);
  if (rc != MPI_SUCCESS) return ThrowMpi(env, rc, "MPI_Comm_split_type(SHARED)");
  MPI_Comm_rank(shm, &g_local_rank);
  MPI_Comm_size(shm, &g_local_size);
  MPI_Group shm_group, world_group;
  MPI_Comm_group(shm, &shm_group);
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  int zero = 0;
  MPI_Group_translate_ranks(shm_group, 1, &zero, world_group, &g_node_leader);
  MPI_Group_free(&shm_group);
  MPI_Group_free(&world_group);
  MPI_Comm_free(&shm);
  return true;
}

Napi::Object InfoObject(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", g_rank);
  o.Set("size", g_size);
  o.Set("threadLevelRequested", "multiple");
  o.Set("threadLevelProvided", ThreadLevelName(g_provided));
  o.Set("localRank", g_local_rank);
  o.Set("localSize", g_local_size);
  o.Set("nodeLeader", g_node_leader);
  o.Set("processorName", g_processor);
  o.Set("worldHandle", 0);
  return o;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(g_init_mu);
  if (g_have_info) return InfoObject(env);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) {
    ThrowMsg(env, "MPI was already finalized in this process; it cannot be initialized again");
    return env.Undefined();
  }
  if (!initialized) {
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &g_provided);
    if (rc != MPI_SUCCESS) {
      ThrowMpi(env, rc, "MPI_Init_thread");
      return env.Undefined();
    }
  } else {
    MPI_Query_thread(&g_provided);
  }
  // Errors come back as codes so that the JS side can name the call, write its flight dump and then abort,
  // rather than MPICH killing the job with a bare message.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(name, &len);
  g_processor.assign(name, len);
  if (!IdentifyNode(env) || !InitFaultChannel(env)) return env.Undefined();
  if (AddComm(MPI_COMM_WORLD) != 0) {
    ThrowMsg(env, "internal: MPI_COMM_WORLD did not get handle 0");
    return env.Undefined();
  }
  g_have_info = true;
  return InfoObject(env);
}

Napi::Value State(const Napi::CallbackInfo& info) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("initialized", initialized != 0);
  o.Set("finalized", finalized != 0);
  return o;
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    CloseFaultChannel();
    int rc = MPI_Finalize();
    if (rc != MPI_SUCCESS) ThrowMpi(info.Env(), rc, "MPI_Finalize");
  }
  return info.Env().Undefined();
}

// Never returns when MPI is up: Hydra tears down every rank of the job, so none is left waiting.
Napi::Value Abort(const Napi::CallbackInfo& info) {
  int code = 1;
  if (info.Length() > 0 && info[0].IsNumber()) code = info[0].As<Napi::Number>().Int32Value();
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  return info.Env().Undefined();
}

// Blocking MPI_Comm_split. The JS side first meets the other members in a polled, timed nonblocking all_gather
// of (color, key), so that by the time this blocks every member is known to have arrived.
Napi::Value CommSplit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!MpiReady(env, "commSplit")) return env.Undefined();
  MPI_Comm parent;
  int color = 0, key = 0;
  if (info.Length() < 3 || !GetComm(env, info[0], &parent) || !GetInt(env, info[1], "color", &color) ||
      !GetInt(env, info[2], "key", &key)) {
    return env.Undefined();
  }
  MPI_Comm out = MPI_COMM_NULL;
  int rc = MPI_Comm_split(parent, color < 0 ? MPI_UNDEFINED : color, key, &out);
  if (rc != MPI_SUCCESS) {
    ThrowMpi(env, rc, "MPI_Comm_split");
    return env.Undefined();
  }
  if (out == MPI_COMM_NULL) return Napi::Number::New(env, -1);
  MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN);
  return Napi::Number::New(env, AddComm(out));
}

Napi::Value CommFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int h = 0;
  if (info.Length() < 1 || !GetInt(env, info[0], "comm", &h)) return env.Undefined();
  if (h == 0) return env.Undefined();  // WORLD is never freed
  MPI_Comm c;
  if (!RemoveComm(h, &c)) {
    ThrowMsg(env, "commFree: unknown or already freed communicator handle " + std::to_string(h));
    return env.Undefined();
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    int rc = MPI_Comm_free(&c);
    if (rc != MPI_SUCCESS) ThrowMpi(env, rc, "MPI_Comm_free");
  }
  return env.Undefined();
}

// rank, size, and the members' world ranks in group order (for flight records and node checks).
Napi::Value CommInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!MpiReady(env, "commInfo")) return env.Undefined();
  MPI_Comm c;
  if (info.Length() < 1 || !GetComm(env, info[0], &c)) return env.Undefined();
  int rank = 0, size = 0;
  MPI_Comm_rank(c, &rank);
  MPI_Comm_size(c, &size);
  MPI_Group g, wg;
  MPI_Comm_group(c, &g);
  MPI_Comm_group(MPI_COMM_WORLD, &wg);
  std::vector<int> in(size), out(size);
  for (int i = 0; i < size; i++) in[i] = i;
  MPI_Group_translate_ranks(g, size, in.data(), wg, out.data());
  MPI_Group_free(&g);
  MPI_Group_free(&wg);
  Napi::Int32Array world = Napi::Int32Array::New(env, size);
  for (int i = 0; i < size; i++) world[i] = out[i];
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", rank);
  o.Set("size", size);
  o.Set("worldRanks", world);
  return o;
}

Napi::Value LibraryVersion(const Napi::CallbackInfo& info) {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(v, &len);
  return Napi::String::New(info.Env(), std::string(v, len));
}

}  // namespace

void InitComms(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("state", Napi::Function::New(env, State));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  exports.Set("abort", Napi::Function::New(env, Abort));
  exports.Set("commSplit", Napi::Function::New(env, CommSplit));
  exports.Set("commFree", Napi::Function::New(env, CommFree));
  exports.Set("commInfo", Napi::Function::New(env, CommInfo));
  exports.Set("libraryVersion", Napi::Function::New(env, LibraryVersion));
}

}  // namespace moempi
