// Placeholder entry point; the MPI binding is filled in by the communicator work.
#include <napi.h>
#include <mpi.h>

static Napi::Value Version(const Napi::CallbackInfo& info) {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(v, &len);
  return Napi::String::New(info.Env(), std::string(v, len));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("libraryVersion", Napi::Function::New(env, Version));
  return exports;
}
NODE_API_MODULE(mpi, Init)
