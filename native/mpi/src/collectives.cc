// Nonblocking collectives on typed arrays. Each call starts an MPI_I* operation and returns a request id; JS hands
// the ids of its pending requests to `progress` from the event loop (poller.ts) until they complete (Pending in
// common.h).
// Requests belong to the JS environment (main thread or worker) that started them.
#include <chrono>
#include <climits>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include "common.h"

namespace moempi {

namespace {

struct Requests {
  uint32_t next = 1;
  std::unordered_map<uint32_t, std::unique_ptr<Pending>> live;
};

Requests* Table(Napi::Env env) {
  Requests* r = env.GetInstanceData<Requests>();
  if (!r) {
    r = new Requests();
    env.SetInstanceData(r);
  }
  return r;
}

Napi::Value Start(Napi::Env env, std::unique_ptr<Pending> p, const std::vector<Napi::Value>& pin) {
  return StartRequest(env, std::move(p), pin);
}

bool GetOp(Napi::Env env, const Napi::Value& v, MPI_Op* out) {
  int op = 0;
  if (!GetInt(env, v, "op", &op)) return false;
  if (op == 0) *out = MPI_SUM;
  else if (op == 1) *out = MPI_MAX;
  else return ThrowMsg(env, "op must be 0 (sum) or 1 (max); premul_sum and avg are composed in JS");
  return true;
}

bool SameType(Napi::Env env, const ArrayView& a, const ArrayView& b, const char* what) {
  if (a.type != b.type) return ThrowMsg(env, std::string(what) + ": send is " + a.typeName + ", recv is " + b.typeName);
  return true;
}

int CommSize(MPI_Comm c) {
  int s = 0;
  MPI_Comm_size(c, &s);
  return s;
}

// Exclusive prefix sums as MPI displacements; false if the total does not fit an int.
bool Displacements(const int* counts, int n, int* displs, long long* total) {
  long long acc = 0;
  for (int i = 0; i < n; i++) {
    if (counts[i] < 0) return false;
    displs[i] = static_cast<int>(acc);
    acc += counts[i];
    if (acc > INT32_MAX) return false;
  }
  *total = acc;
  return true;
}

Napi::Value IAllgather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MPI_Comm c;
  ArrayView s, r;
  if (!MpiReady(env, "iallgather") || info.Length() < 3 || !GetComm(env, info[0], &c) ||
      !GetArray(env, info[1], "send", &s) || !GetArray(env, info[2], "recv", &r) || !SameType(env, s, r, "iallgather")) {
    return env.Undefined();
  }
  if (r.length != s.length * static_cast<size_t>(CommSize(c))) {
    ThrowMsg(env, "iallgather: recv length must be size * send length");
    return env.Undefined();
  }
  auto p = std::make_unique<Pending>();
  int rc = MPI_Iallgather(s.data, static_cast<int>(s.length), s.type, r.data, static_cast<int>(s.length), r.type, c, &p->req);
  if (rc != MPI_SUCCESS) {
    ThrowMpi(env, rc, "MPI_Iallgather");
    return env.Undefined();
  }
  return Start(env, std::move(p), {info[1], info[2]});
}

Napi::Value IAllgatherv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MPI_Comm c;
  ArrayView s, r;
  if (!MpiReady(env, "iallgatherv") || info.Length() < 4 || !GetComm(env, info[0], &c) ||
      !GetArray(env, info[1], "send", &s) || !GetArray(env, info[2], "recv", &r) || !SameType(env, s, r, "iallgatherv")) {
    return env.Undefined();
  }
  const int n = CommSize(c);
  auto p = std::make_unique<Pending>();
  std::vector<int> counts;
  if (!GetInt32Vector(env, info[3], "counts", n, &counts)) return env.Undefined();
  p->ints.resize(2 * n);
  std::copy(counts.begin(), counts.end(), p->ints.begin());
  long long total = 0;
  if (!Displacements(p->ints.data(), n, p->ints.data() + n, &total) || static_cast<size_t>(total) > r.length) {
    ThrowMsg(env, "iallgatherv: counts are negative, overflow, or exceed recv length");
    return env.Undefined();
  }
  int rc = MPI_Iallgatherv(s.data, static_cast<int>(s.length), s.type, r.data, p->ints.data(), p->ints.data() + n, r.type,
                           c, &p->req);
  if (rc != MPI_SUCCESS) {
    ThrowMpi(env, rc, "MPI_Iallgatherv");
    return env.Undefined();
  }
  return Start(env, std::move(p), {info[1], info[2]});
}

Napi::Value IReduceScatterBlock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MPI_Comm c;
  ArrayView s, r;
  MPI_Op op;
  if (!MpiReady(env, "ireduceScatterBlock") || info.Length() < 4 || !GetComm(env, info[0], &c) ||
      !GetArray(env, info[1], "send", &s) || !GetArray(env, info[2], "recv", &r) ||
      !SameType(env, s, r, "ireduceScatterBlock") || !GetOp(env, info[3], &op)) {
    return env.Undefined();
  }
  if (s.length != r.length * static_cast<size_t>(CommSize(c))) {
    ThrowMsg(env, "ireduceScatterBlock: send length must be size * recv length");
    return env.Undefined();
  }
  auto p = std::make_unique<Pending>();
  int rc = MPI_Ireduce_scatter_block(s.data, r.data, static_cast<int>(r.length), r.type, op, c, &p->req);
  if (rc != MPI_SUCCESS) {
    ThrowMpi(env, rc, "MPI_Ireduce_scatter_block");
    return env.Undefined();
  }
  return Start(env, std::move(p), {info[1], info[2]});
}

Napi::Value IAllreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MPI_Comm c;
  ArrayView b;
  MPI_Op op;
  if (!MpiReady(env, "iallreduce") || info.Length() < 3 || !GetComm(env, info[0], &c) ||
      !GetArray(env, info[1], "buf", &b) || !GetOp(env, info[2], &op)) {
    return env.Undefined();
  }
  auto p = std::make_unique<Pending>();
  int rc = MPI_Iallreduce(MPI_IN_PLACE, b.data, static_cast<int>(b.length), b.type, op, c, &p->req);
  if (rc != MPI_SUCCESS) {
    ThrowMpi(env, rc, "MPI_Iallreduce");
    return env.Undefined();
  }
  return Start(env, std::move(p), {info[1]});
}

Napi::Value IAlltoallv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MPI_Comm c;
  ArrayView s, r;
  if (!MpiReady(env, "ialltoallv") || info.Length() < 5 || !GetComm(env, info[0], &c) ||
      !GetArray(env, info[1], "send", &s) || !GetArray(env, info[3], "recv", &r) || !SameType(env, s, r, "ialltoallv")) {
    return env.Undefined();
  }
  const int n = CommSize(c);
  std::vector<int> sc, rc_;
  if (!GetInt32Vector(env, info[2], "sendCounts", n, &sc) || !GetInt32Vector(env, info[4], "recvCounts", n, &rc_)) {
    return env.Undefined();
  }
  auto p = std::make_unique<Pending>();
  p->ints.resize(4 * n);
  int* scounts = p->ints.data();
  int* sdispls = scounts + n;
  int* rcounts = sdispls + n;
  int* rdispls = rcounts + n;
  std::copy(sc.begin(), sc.end(), scounts);
  std::copy(rc_.begin(), rc_.end(), rcounts);
  long long stotal = 0, rtotal = 0;
  if (!Displacements(scounts, n, sdispls, &stotal) || !Displacements(rcounts, n, rdispls, &rtotal) ||
      static_cast<size_t>(stotal) > s.length || static_cast<size_t>(rtotal) > r.length) {
    ThrowMsg(env, "ialltoallv: counts are negative, overflow, or exceed the array lengths");
    return env.Undefined();
  }
  int rc = MPI_Ialltoallv(s.data, scounts, sdispls, s.type, r.data, rcounts, rdispls, r.type, c, &p->req);
  if (rc != MPI_SUCCESS) {
    ThrowMpi(env, rc, "MPI_Ialltoallv");
    return env.Undefined();
  }
  return Start(env, std::move(p), {info[1], info[3]});
}

Napi::Value IBcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MPI_Comm c;
  ArrayView b;
  int root = 0;
  if (!MpiReady(env, "ibcast") || info.Length() < 3 || !GetComm(env, info[0], &c) || !GetArray(env, info[1], "buf", &b) ||
      !GetInt(env, info[2], "root", &root)) {
    return env.Undefined();
  }
  if (root < 0 || root >= CommSize(c)) {
    ThrowMsg(env, "ibcast: root is not a rank of the communicator");
    return env.Undefined();
  }
  auto p = std::make_unique<Pending>();
  int rc = MPI_Ibcast(b.data, static_cast<int>(b.length), b.type, root, c, &p->req);
  if (rc != MPI_SUCCESS) {
    ThrowMpi(env, rc, "MPI_Ibcast");
    return env.Undefined();
  }
  return Start(env, std::move(p), {info[1]});
}

Napi::Value IBarrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MPI_Comm c;
  if (!MpiReady(env, "ibarrier") || info.Length() < 1 || !GetComm(env, info[0], &c)) return env.Undefined();
  auto p = std::make_unique<Pending>();
  int rc = MPI_Ibarrier(c, &p->req);
  if (rc != MPI_SUCCESS) {
    ThrowMpi(env, rc, "MPI_Ibarrier");
    return env.Undefined();
  }
  return Start(env, std::move(p), {});
}

// Tests every request in `ids` repeatedly until one completes or `budgetUs` has passed, and marks completed ones
// in `done` (1) — their pins are released. Large transfers advance a few fragments per MPI_Test; going back to the
// event loop after each single test would add the loop's overhead per fragment. The poller's budget (1 ms by
// default, poller.ts) amortizes that while still bounding how long timers and messages wait.
Napi::Value Progress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsNumber()) {
    ThrowMsg(env, "progress(ids: Int32Array, done: Uint8Array, budgetUs: number)");
    return env.Undefined();
  }
  auto ids = info[0].As<Napi::Int32Array>();
  auto done = info[1].As<Napi::Uint8Array>();
  if (done.ElementLength() < ids.ElementLength()) {
    ThrowMsg(env, "progress: done must be at least as long as ids");
    return env.Undefined();
  }
  const double budget = info[2].As<Napi::Number>().DoubleValue();
  Requests* t = Table(env);
  const size_t n = ids.ElementLength();
  std::vector<Pending*> reqs(n, nullptr);
  for (size_t i = 0; i < n; i++) {
    auto it = t->live.find(static_cast<uint32_t>(ids[i]));
    if (it == t->live.end()) {
      ThrowMsg(env, "progress: unknown request " + std::to_string(ids[i]));
      return env.Undefined();
    }
    reqs[i] = it->second.get();
    done[i] = 0;
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double, std::micro>(budget);
  int completed = 0;
  do {
    for (size_t i = 0; i < n; i++) {
      if (done[i]) continue;
      int flag = 0;
      std::string err = reqs[i]->Test(&flag);
      if (!err.empty()) {
        t->live.erase(static_cast<uint32_t>(ids[i]));
        ThrowMsg(env, err);
        return env.Undefined();
      }
      if (flag) {
        done[i] = 1;
        completed++;
      }
    }
  } while (completed == 0 && std::chrono::steady_clock::now() < until);
  for (size_t i = 0; i < n; i++) if (done[i]) t->live.erase(static_cast<uint32_t>(ids[i]));
  return Napi::Number::New(env, completed);
}

}  // namespace

std::string Pending::Test(int* flag) {
  int rc = MPI_Test(&req, flag, MPI_STATUS_IGNORE);
  if (rc == MPI_SUCCESS) return "";
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, buf, &len);
  return "MPI_Test: " + std::string(buf, len);
}

Napi::Value StartRequest(Napi::Env env, std::unique_ptr<Pending> p, const std::vector<Napi::Value>& pin) {
  for (const auto& v : pin) p->pins.push_back(Napi::Persistent(v));
  Requests* t = Table(env);
  uint32_t id = t->next++;
  t->live.emplace(id, std::move(p));
  return Napi::Number::New(env, id);
}

void InitCollectives(Napi::Env env, Napi::Object exports) {
  exports.Set("iallgather", Napi::Function::New(env, IAllgather));
  exports.Set("iallgatherv", Napi::Function::New(env, IAllgatherv));
  exports.Set("ireduceScatterBlock", Napi::Function::New(env, IReduceScatterBlock));
  exports.Set("iallreduce", Napi::Function::New(env, IAllreduce));
  exports.Set("ialltoallv", Napi::Function::New(env, IAlltoallv));
  exports.Set("ibcast", Napi::Function::New(env, IBcast));
  exports.Set("ibarrier", Napi::Function::New(env, IBarrier));
  exports.Set("progress", Napi::Function::New(env, Progress));
}

}  // namespace moempi
