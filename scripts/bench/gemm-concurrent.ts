// The node's GEMM rate per shape class as a job's ranks get it: `threads` worker threads (one per rank, one BLAS
// thread each) running the classes at the same time on the node's cores, every call writing fresh output buffers,
// counted per CPU-second the threads got × min(cores, threads) — what the projection's "the node delivers its rate,
// shared by the ranks" needs, independent of other processes' load. measureGemmClasses' one-thread best-of rates
// times min(cores, ranks) assume no loss from time-sharing the cores and warm outputs.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { GEMM_CLASSES } from './seed-projection.ts';

const BOOTSTRAP = new URL('../../src/comm/threads/bootstrap.mjs', import.meta.url);
const ENTRY = new URL('./gemm-concurrent-worker.ts', import.meta.url).href;

/** Node GFLOP/s per class (GEMM_CLASSES order) from `threads` threads timed together for `ms` each. */
export async function measureGemmClassesConcurrent(threads: number, ms = 400): Promise<number[]> {
  const ready = new Int32Array(new SharedArrayBuffer(8));
  const classes = GEMM_CLASSES.map((c) => [...c]);
  const each = await Promise.all(
    Array.from(
      { length: threads },
      () =>
        new Promise<{ flop: number; cpu: number }[]>((resolve, reject) => {
          const w = new Worker(BOOTSTRAP, { workerData: { __entry: ENTRY, classes, ms, ready, threads } });
          const timer = setTimeout(() => {
            void w.terminate();
            reject(new Error(`gemm-concurrent: a thread gave no rates within 120 s`));
          }, 120_000);
          w.once('message', (m: { flop: number; cpu: number }[]) => {
            clearTimeout(timer);
            resolve(m);
            void w.terminate();
          });
          w.once('error', (e) => {
            clearTimeout(timer);
            reject(e);
          });
        }),
    ),
  );
  const lanes = Math.min(availableParallelism(), threads);
  return classes.map((_, i) => {
    const flop = each.reduce((a, r) => a + r[i]!.flop, 0);
    const cpu = each.reduce((a, r) => a + r[i]!.cpu, 0);
    if (cpu <= 0) throw new Error('gemm-concurrent: the threads used no measurable CPU time (is /proc mounted?)');
    return (flop / cpu / 1e9) * lanes;
  });
}
