// The fault channel: a private duplicate of WORLD on which every rank keeps one receive posted. A rank that is
// about to abort the job (its program threw, it timed out, it is exiting mid-run) sends a one-line note to every
// other rank first; they see it in their next poll, reject what they wait in with the note, write their flight
// dumps and print where they stood. Without it, MPI_Abort kills the survivors (Hydra sends SIGKILL) before they can
// say anything, and only the failing rank's side of the story is left.
#include <chrono>
#include <mutex>
#include <thread>

#include "common.h"

namespace moempi {

namespace {

constexpr int kTag = 7301;
constexpr int kMaxNote = 4096;

std::mutex g_mu;
MPI_Comm g_comm = MPI_COMM_NULL;
MPI_Request g_recv = MPI_REQUEST_NULL;
char g_inbox[kMaxNote];
std::string g_outbox;  // must outlive the sends, which may still be in flight when the process aborts

void PostReceive() {
  MPI_Irecv(g_inbox, kMaxNote, MPI_CHAR, MPI_ANY_SOURCE, kTag, g_comm, &g_recv);
}

Napi::Value Poll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_comm == MPI_COMM_NULL || g_recv == MPI_REQUEST_NULL) return env.Null();
  int flag = 0;
  MPI_Status st;
  if (MPI_Test(&g_recv, &flag, &st) != MPI_SUCCESS || !flag) return env.Null();
  int count = 0;
  MPI_Get_count(&st, MPI_CHAR, &count);
  Napi::Object o = Napi::Object::New(env);
  o.Set("source", st.MPI_SOURCE);
  o.Set("message", std::string(g_inbox, count > 0 ? count : 0));
  PostReceive();
  return o;
}

// Sends `note` to every other rank and waits up to graceMs for the sends to complete locally. Returns whether
// they did (a dead peer can keep a send pending; the caller aborts anyway).
Napi::Value Notify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber()) {
    ThrowMsg(env, "faultNotify(note: string, graceMs: number)");
    return env.Undefined();
  }
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_comm == MPI_COMM_NULL) return Napi::Boolean::New(env, false);
  g_outbox = info[0].As<Napi::String>().Utf8Value().substr(0, kMaxNote);
  const int grace = info[1].As<Napi::Number>().Int32Value();
  int rank = 0, size = 1;
  MPI_Comm_rank(g_comm, &rank);
  MPI_Comm_size(g_comm, &size);
  std::vector<MPI_Request> reqs;
  for (int r = 0; r < size; r++) {
    if (r == rank) continue;
    MPI_Request q;
    if (MPI_Isend(g_outbox.data(), static_cast<int>(g_outbox.size()), MPI_CHAR, r, kTag, g_comm, &q) == MPI_SUCCESS) reqs.push_back(q);
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace);
  int done = reqs.empty() ? 1 : 0;
  while (!done && std::chrono::steady_clock::now() < until) {
    MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return Napi::Boolean::New(env, done != 0);
}

}  // namespace

bool InitFaultChannel(Napi::Env env) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_comm != MPI_COMM_NULL) return true;
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &g_comm);
  if (rc != MPI_SUCCESS) return ThrowMpi(env, rc, "MPI_Comm_dup (fault channel)");
  MPI_Comm_set_errhandler(g_comm, MPI_ERRORS_RETURN);
  PostReceive();
  return true;
}

// Before MPI_Finalize: a posted receive would be an outstanding request.
void CloseFaultChannel() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_comm == MPI_COMM_NULL) return;
  if (g_recv != MPI_REQUEST_NULL) {
    MPI_Cancel(&g_recv);
    MPI_Wait(&g_recv, MPI_STATUS_IGNORE);
  }
  MPI_Comm_free(&g_comm);
  g_comm = MPI_COMM_NULL;
}

void InitFaults(Napi::Env env, Napi::Object exports) {
  exports.Set("faultPoll", Napi::Function::New(env, Poll));
  exports.Set("faultNotify", Napi::Function::New(env, Notify));
}

}  // namespace moempi
