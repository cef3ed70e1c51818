// N-API binding over oneCCL (host buffers). It compiles native/mpi's sources too: MPI starts the processes,
// carries the fault channel and bootstraps each oneCCL key-value store, and the request table and progress() are
// shared, so one poller drives both MPI and oneCCL operations. The TypeScript side is src/comm/ccl/.
#include "ccl_common.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  moempi::InitComms(env, exports);
  moempi::InitCollectives(env, exports);
  moempi::InitFaults(env, exports);
  moeccl::InitSetup(env, exports);
  moeccl::InitCollectives(env, exports);
  return exports;
}
NODE_API_MODULE(ccl, Init)
