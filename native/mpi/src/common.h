// Shared helpers of the MPI binding: typed-array access, error reporting, the communicator table.
// C++ exceptions are disabled (NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS), so every helper reports failure by
// scheduling a JS exception and returning false; callers return env.Undefined() at once.
#pragma once
#include <mpi.h>
#include <napi.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace moempi {

struct ArrayView {
  void* data = nullptr;
  size_t length = 0;  // elements
  MPI_Datatype type = MPI_DATATYPE_NULL;
  const char* typeName = "";
};

// Schedules a JS Error "<what>: <MPI error string>" and returns false.
bool ThrowMpi(Napi::Env env, int code, const std::string& what);
bool ThrowMsg(Napi::Env env, const std::string& msg);

// Float32Array / Float64Array / Int32Array (plain or SharedArrayBuffer-backed). Reading the data pointer through
// napi_get_typedarray_info also moves small on-heap arrays off the V8 heap, so the pointer stays valid while a
// reference to the array is held.
bool GetArray(Napi::Env env, const Napi::Value& v, const char* name, ArrayView* out);
bool GetInt32Vector(Napi::Env env, const Napi::Value& v, const char* name, size_t expected, std::vector<int>* out);
bool GetInt(Napi::Env env, const Napi::Value& v, const char* name, int* out);

// Communicator handles are small integers into a process-wide table (worker threads share it: an MPI_Comm is
// usable from any thread under MPI_THREAD_MULTIPLE). Handle 0 is MPI_COMM_WORLD once initialized.
bool GetComm(Napi::Env env, const Napi::Value& v, MPI_Comm* out);
int AddComm(MPI_Comm c);
bool RemoveComm(int handle, MPI_Comm* out);
bool MpiReady(Napi::Env env, const char* what);

// One nonblocking operation in flight. The request table (collectives.cc) and progress() are shared with the ccl
// binding, which compiles these sources too and adds oneCCL operations as subclasses polled with event.test().
// Until it completes, the request holds references to the arrays (so GC cannot free or move their memory) and owns
// whatever the library still reads (counts, displacements).
struct Pending {
  virtual ~Pending() = default;
  // Sets *flag when complete; returns an error text ("" when fine).
  virtual std::string Test(int* flag);
  MPI_Request req = MPI_REQUEST_NULL;
  std::vector<Napi::Reference<Napi::Value>> pins;
  std::vector<int> ints;
};

// Registers p (pinning `pin`) and returns its request id for progress().
Napi::Value StartRequest(Napi::Env env, std::unique_ptr<Pending> p, const std::vector<Napi::Value>& pin);

void InitComms(Napi::Env env, Napi::Object exports);
void InitCollectives(Napi::Env env, Napi::Object exports);
void InitFaults(Napi::Env env, Napi::Object exports);
bool InitFaultChannel(Napi::Env env);
void CloseFaultChannel();

}  // namespace moempi
