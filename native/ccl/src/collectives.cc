// Nonblocking oneCCL collectives on typed arrays (host memory). Each call starts the operation, keeps its
// ccl::event in the shared request table (native/mpi's, so progress() tests MPI and oneCCL requests alike) and
// returns the request id; progress() calls event.test() until it completes. Reductions oneCCL lacks on the host
// (avg, premul_sum) are composed on the JS side, as for MPI.
#include <climits>
#include <thread>

#include "ccl_common.h"

namespace moeccl {

namespace {

struct CclPending : moempi::Pending {
  std::unique_ptr<ccl::event> ev;
  std::vector<size_t> a, b;  // counts oneCCL may still read
  std::string Test(int* flag) override {
    try {
      *flag = ev->test() ? 1 : 0;
      // oneCCL's own worker thread moves the data; test() only reads its state. Spinning here would take the core
      // that thread needs (2 ranks + 2 workers on 2 cores), so give it up between tests.
      if (!*flag) std::this_thread::yield();
      return "";
    } catch (const std::exception& e) {
      return std::string("oneCCL event.test: ") + e.what();
    }
  }
};

bool GetOp(Napi::Env env, const Napi::Value& v, ccl::reduction* out) {
  int op = 0;
  if (!moempi::GetInt(env, v, "op", &op)) return false;
  if (op == 0) *out = ccl::reduction::sum;
  else if (op == 1) *out = ccl::reduction::max;
  else return moempi::ThrowMsg(env, "op must be 0 (sum) or 1 (max); premul_sum and avg are composed in JS");
  return true;
}

bool SameType(Napi::Env env, const CclArray& a, const CclArray& b, const char* what) {
  if (a.type != b.type) return moempi::ThrowMsg(env, std::string(what) + ": send is " + a.typeName + ", recv is " + b.typeName);
  return true;
}

bool GetCounts(Napi::Env env, const Napi::Value& v, const char* name, size_t n, std::vector<size_t>* out, size_t* total) {
  std::vector<int> c;
  if (!moempi::GetInt32Vector(env, v, name, n, &c)) return false;
  out->resize(n);
  *total = 0;
  for (size_t i = 0; i < n; i++) {
    if (c[i] < 0) return moempi::ThrowMsg(env, std::string(name) + " has a negative count");
    (*out)[i] = static_cast<size_t>(c[i]);
    *total += (*out)[i];
  }
  return true;
}

// Runs `start` (which returns the operation's event), registering it with its pins, or reports oneCCL's exception.
template <typename F>
Napi::Value Launch(Napi::Env env, const char* what, std::unique_ptr<CclPending> p, const std::vector<Napi::Value>& pin, F start) {
  try {
    p->ev = std::make_unique<ccl::event>(start(*p));
  } catch (const std::exception& e) {
    ThrowCcl(env, what, e);
    return env.Undefined();
  }
  return moempi::StartRequest(env, std::move(p), pin);
}

Napi::Value Allgather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ccl::communicator* c;
  CclArray s, r;
  if (info.Length() < 3 || !(c = GetComm(env, info[0])) || !GetArray(env, info[1], "send", &s) ||
      !GetArray(env, info[2], "recv", &r) || !SameType(env, s, r, "cclAllgather")) {
    return env.Undefined();
  }
  const size_t n = static_cast<size_t>(c->size());
  if (r.length != s.length * n) {
    moempi::ThrowMsg(env, "cclAllgather: recv length must be size * send length");
    return env.Undefined();
  }
  return Launch(env, "ccl::allgather", std::make_unique<CclPending>(), {info[1], info[2]},
                [&](CclPending&) { return ccl::allgather(s.data, r.data, s.length, s.type, *c); });
}

Napi::Value Allgatherv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ccl::communicator* c;
  CclArray s, r;
  if (info.Length() < 4 || !(c = GetComm(env, info[0])) || !GetArray(env, info[1], "send", &s) ||
      !GetArray(env, info[2], "recv", &r) || !SameType(env, s, r, "cclAllgatherv")) {
    return env.Undefined();
  }
  auto p = std::make_unique<CclPending>();
  size_t total = 0;
  if (!GetCounts(env, info[3], "counts", static_cast<size_t>(c->size()), &p->a, &total)) return env.Undefined();
  if (total > r.length || p->a[c->rank()] != s.length) {
    moempi::ThrowMsg(env, "cclAllgatherv: counts exceed recv length, or this rank's count is not its send length");
    return env.Undefined();
  }
  return Launch(env, "ccl::allgatherv", std::move(p), {info[1], info[2]},
                [&](CclPending& q) { return ccl::allgatherv(s.data, s.length, r.data, q.a, s.type, *c); });
}

Napi::Value ReduceScatter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ccl::communicator* c;
  CclArray s, r;
  ccl::reduction op;
  if (info.Length() < 4 || !(c = GetComm(env, info[0])) || !GetArray(env, info[1], "send", &s) ||
      !GetArray(env, info[2], "recv", &r) || !SameType(env, s, r, "cclReduceScatter") || !GetOp(env, info[3], &op)) {
    return env.Undefined();
  }
  if (s.length != r.length * static_cast<size_t>(c->size())) {
    moempi::ThrowMsg(env, "cclReduceScatter: send length must be size * recv length");
    return env.Undefined();
  }
  return Launch(env, "ccl::reduce_scatter", std::make_unique<CclPending>(), {info[1], info[2]},
                [&](CclPending&) { return ccl::reduce_scatter(s.data, r.data, r.length, s.type, op, *c); });
}

Napi::Value Allreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ccl::communicator* c;
  CclArray b;
  ccl::reduction op;
  if (info.Length() < 3 || !(c = GetComm(env, info[0])) || !GetArray(env, info[1], "buf", &b) || !GetOp(env, info[2], &op)) {
    return env.Undefined();
  }
  return Launch(env, "ccl::allreduce", std::make_unique<CclPending>(), {info[1]},
                [&](CclPending&) { return ccl::allreduce(b.data, b.data, b.length, b.type, op, *c); });
}

Napi::Value Alltoallv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ccl::communicator* c;
  CclArray s, r;
  if (info.Length() < 5 || !(c = GetComm(env, info[0])) || !GetArray(env, info[1], "send", &s) ||
      !GetArray(env, info[3], "recv", &r) || !SameType(env, s, r, "cclAlltoallv")) {
    return env.Undefined();
  }
  auto p = std::make_unique<CclPending>();
  const size_t n = static_cast<size_t>(c->size());
  size_t st = 0, rt = 0;
  if (!GetCounts(env, info[2], "sendCounts", n, &p->a, &st) || !GetCounts(env, info[4], "recvCounts", n, &p->b, &rt)) {
    return env.Undefined();
  }
  if (st > s.length || rt > r.length) {
    moempi::ThrowMsg(env, "cclAlltoallv: counts exceed the array lengths");
    return env.Undefined();
  }
  return Launch(env, "ccl::alltoallv", std::move(p), {info[1], info[3]},
                [&](CclPending& q) { return ccl::alltoallv(s.data, q.a, r.data, q.b, s.type, *c); });
}

Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ccl::communicator* c;
  CclArray b;
  int root = 0;
  if (info.Length() < 3 || !(c = GetComm(env, info[0])) || !GetArray(env, info[1], "buf", &b) ||
      !moempi::GetInt(env, info[2], "root", &root)) {
    return env.Undefined();
  }
  if (root < 0 || root >= c->size()) {
    moempi::ThrowMsg(env, "cclBroadcast: root is not a rank of the communicator");
    return env.Undefined();
  }
  return Launch(env, "ccl::broadcast", std::make_unique<CclPending>(), {info[1]},
                [&](CclPending&) { return ccl::broadcast(b.data, b.length, b.type, root, *c); });
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ccl::communicator* c;
  if (info.Length() < 1 || !(c = GetComm(env, info[0]))) return env.Undefined();
  return Launch(env, "ccl::barrier", std::make_unique<CclPending>(), {}, [&](CclPending&) { return ccl::barrier(*c); });
}

}  // namespace

void InitCollectives(Napi::Env env, Napi::Object exports) {
  exports.Set("cclAllgather", Napi::Function::New(env, Allgather));
  exports.Set("cclAllgatherv", Napi::Function::New(env, Allgatherv));
  exports.Set("cclReduceScatter", Napi::Function::New(env, ReduceScatter));
  exports.Set("cclAllreduce", Napi::Function::New(env, Allreduce));
  exports.Set("cclAlltoallv", Napi::Function::New(env, Alltoallv));
  exports.Set("cclBroadcast", Napi::Function::New(env, Broadcast));
  exports.Set("cclBarrier", Napi::Function::New(env, Barrier));
}

}  // namespace moeccl
