// N-API binding over MPICH: process-level MPI (init, node identification, communicators, finalize, abort) in
// comms.cc, nonblocking collectives polled from JS in collectives.cc, the fault channel in faults.cc. The TypeScript side is src/comm/mpi/.
#include "common.h"

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  moempi::InitComms(env, exports);
  moempi::InitCollectives(env, exports);
  moempi::InitFaults(env, exports);
  return exports;
}
NODE_API_MODULE(mpi, Init)
