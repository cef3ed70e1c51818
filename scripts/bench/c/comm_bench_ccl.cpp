/*
 * The plain-C++ oneCCL baseline of `npm run bench:comm`: the collectives the ccl transport issues, called directly
 * on host buffers over the same oneCCL library (MPI initialised with MPI_THREAD_MULTIPLE first, the main KVS on
 * rank 0, its address broadcast over MPI), timed exactly as comm_bench.c times MPI: a barrier, then `inner`
 * back-to-back calls, `reps` repetitions after max(3, inner, 256 MiB / size) warm-up calls; each rank's median
 * per-call time, the slowest rank's reported. Each op runs twice: ccl::<op>(...).wait() ("blocking", the baseline)
 * and the same call polled with event.test(), yielding the core between tests, until done ("nonblocking": what the
 * ccl transport does; oneCCL's worker thread moves the data and needs that core).
 * Output: one JSON object per line on rank 0, as comm_bench.c.
 * Usage: mpiexec.mpich -n 2 comm_bench_ccl <reps> <size bytes>...   (the bench sets CCL_ATL_TRANSPORT=mpi and
 * CCL_MPI_LIBRARY_PATH as the binding does)
 */
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <oneapi/ccl.hpp>
#include <thread>
#include <vector>

enum { ALLGATHER, REDUCESCATTER, ALLREDUCE, ALLTOALLV, NOPS };
static const char* NAMES[NOPS] = {"allgather", "reducescatter", "allreduce", "alltoallv"};

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank, p;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  ccl::init();
  ccl::shared_ptr_class<ccl::kvs> kvs;
  ccl::kvs::address_type addr;
  if (rank == 0) {
    kvs = ccl::create_main_kvs();
    addr = kvs->get_address();
  }
  MPI_Bcast(addr.data(), addr.size(), MPI_BYTE, 0, MPI_COMM_WORLD);
  if (rank != 0) kvs = ccl::create_kvs(addr);
  auto comm = ccl::create_communicator(p, rank, kvs);
  int reps = argc > 1 ? atoi(argv[1]) : 7;
  for (int a = 2; a < argc; a++) {
    long bytes = atol(argv[a]);
    size_t n = bytes / 4;
    int inner = bytes >= (8l << 20) ? 2 : 8;
    std::vector<float> send(n * p), recv(n * p);
    for (size_t i = 0; i < n * p; i++) send[i] = (float)(i % 97);
    std::vector<size_t> counts(p, n / p);
    for (int mode = 0; mode < 2; mode++) {
      for (int op = 0; op < NOPS; op++) {
        auto start = [&]() {
          switch (op) {
            case ALLGATHER: return ccl::allgather(send.data(), recv.data(), n, ccl::datatype::float32, comm);
            case REDUCESCATTER: return ccl::reduce_scatter(send.data(), recv.data(), n, ccl::datatype::float32, ccl::reduction::sum, comm);
            case ALLREDUCE: return ccl::allreduce(send.data(), send.data(), n, ccl::datatype::float32, ccl::reduction::sum, comm);
            default: return ccl::alltoallv(send.data(), counts, recv.data(), counts, ccl::datatype::float32, comm);
          }
        };
        auto call = [&]() {
          auto ev = start();
          if (mode == 0) ev.wait();
          else while (!ev.test()) std::this_thread::yield();
        };
        long warm = std::max<long>({3, inner, (256l << 20) / bytes});
        for (long w = 0; w < warm; w++) call();
        std::vector<double> t(reps);
        for (int r = 0; r < reps; r++) {
          MPI_Barrier(MPI_COMM_WORLD);
          double t0 = MPI_Wtime();
          for (int k = 0; k < inner; k++) call();
          t[r] = (MPI_Wtime() - t0) / inner;
        }
        double mine = median(t), slowest = 0;
        MPI_Reduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        double moved = (op == ALLGATHER || op == REDUCESCATTER) ? (double)bytes * p : (double)bytes;
        if (rank == 0) {
          printf("{\"op\":\"%s\",\"mode\":\"%s\",\"bytes_per_rank\":%ld,\"ms\":%.6f,\"gbps\":%.4f}\n", NAMES[op], mode ? "nonblocking" : "blocking",
                 bytes, slowest * 1e3, moved / slowest / 1e9);
          fflush(stdout);
        }
      }
    }
  }
  MPI_Finalize();
  return 0;
}
