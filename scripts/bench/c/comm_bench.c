/*
 * The plain-C baseline of `npm run bench:comm`: the collectives the mpi transport issues, called directly (blocking
 * MPI calls on float buffers), timed the same way as the TypeScript ranks time theirs: a barrier, then `inner`
 * back-to-back calls, repeated `reps` times, after max(3, inner, 256 MiB / size) warm-up calls; each rank takes the median per-call time, and the slowest rank's median
 * is reported. Sizes are bytes each rank contributes (S); bytes counted per call, as in the bench:
 *   allgather      send S, receive P*S      -> P*S
 *   reducescatter  send P*S, receive S      -> P*S
 *   allreduce      S in place               -> S
 *   alltoallv      S out (S/P per peer), S in -> S
 * Each op runs twice: blocking (MPI_Allgather, …: the baseline) and nonblocking polled with MPI_Test until done
 * (MPI_Iallgather, …: what the mpi transport does), which separates MPICH's nonblocking algorithms from the cost
 * of the binding and of JavaScript.
 * Output: one JSON object per line on rank 0: {"op":..,"mode":"blocking"|"nonblocking","bytes_per_rank":..,"ms":..,"gbps":..}.
 * Usage: mpiexec.mpich -n 2 comm_bench <reps> <size bytes>...
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static double median(double* v, int n) {
  qsort(v, n, sizeof(double), cmp);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

enum { ALLGATHER, REDUCESCATTER, ALLREDUCE, ALLTOALLV, NOPS };
static const char* NAMES[NOPS] = {"allgather", "reducescatter", "allreduce", "alltoallv"};

static void icall(int op, float* send, float* recv, int n, int* counts, int* displs) {
  MPI_Request q;
  switch (op) {
    case ALLGATHER: MPI_Iallgather(send, n, MPI_FLOAT, recv, n, MPI_FLOAT, MPI_COMM_WORLD, &q); break;
    case REDUCESCATTER: MPI_Ireduce_scatter_block(send, recv, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &q); break;
    case ALLREDUCE: MPI_Iallreduce(MPI_IN_PLACE, send, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &q); break;
    default: MPI_Ialltoallv(send, counts, displs, MPI_FLOAT, recv, counts, displs, MPI_FLOAT, MPI_COMM_WORLD, &q); break;
  }
  int done = 0;
  while (!done) MPI_Test(&q, &done, MPI_STATUS_IGNORE);
}

static void call(int op, float* send, float* recv, int n, int p, int* counts, int* displs) {
  switch (op) {
    case ALLGATHER: MPI_Allgather(send, n, MPI_FLOAT, recv, n, MPI_FLOAT, MPI_COMM_WORLD); break;
    case REDUCESCATTER: MPI_Reduce_scatter_block(send, recv, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    case ALLREDUCE: MPI_Allreduce(MPI_IN_PLACE, send, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    case ALLTOALLV: MPI_Alltoallv(send, counts, displs, MPI_FLOAT, recv, counts, displs, MPI_FLOAT, MPI_COMM_WORLD); break;
  }
  (void)p;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, p;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  int reps = argc > 1 ? atoi(argv[1]) : 7;
  for (int a = 2; a < argc; a++) {
    long bytes = atol(argv[a]);
    int n = (int)(bytes / 4);
    int inner = bytes >= (8l << 20) ? 2 : 8;
    float* send = malloc(sizeof(float) * (size_t)n * p);
    float* recv = malloc(sizeof(float) * (size_t)n * p);
    for (long i = 0; i < (long)n * p; i++) send[i] = (float)(i % 97), recv[i] = 0;
    int* counts = malloc(sizeof(int) * p);
    int* displs = malloc(sizeof(int) * p);
    for (int r = 0; r < p; r++) counts[r] = n / p, displs[r] = r * (n / p);
    double* t = malloc(sizeof(double) * reps);
    for (int mode = 0; mode < 2; mode++)
    for (int op = 0; op < NOPS; op++) {
#define CALL() (mode == 0 ? call(op, send, recv, n, p, counts, displs) : icall(op, send, recv, n, counts, displs))
      /* Warm-up as in comm.ts: max(3, inner, 256 MiB / bytes) calls. */
      long warm = (256l << 20) / bytes;
      if (warm < inner) warm = inner;
      if (warm < 3) warm = 3;
      for (long w = 0; w < warm; w++) CALL();
      for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        for (int k = 0; k < inner; k++) CALL();
        t[r] = (MPI_Wtime() - t0) / inner;
      }
      double mine = median(t, reps), slowest = 0;
      MPI_Reduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
      double moved = (op == ALLGATHER || op == REDUCESCATTER) ? (double)bytes * p : (double)bytes;
      if (rank == 0) {
        printf("{\"op\":\"%s\",\"mode\":\"%s\",\"bytes_per_rank\":%ld,\"ms\":%.6f,\"gbps\":%.4f}\n", NAMES[op], mode ? "nonblocking" : "blocking", bytes,
               slowest * 1e3, moved / slowest / 1e9);
        fflush(stdout);
      }
    }
    free(send), free(recv), free(counts), free(displs), free(t);
  }
  MPI_Finalize();
  return 0;
}
