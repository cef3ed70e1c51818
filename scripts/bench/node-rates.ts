// The node's kernel rates as a job's ranks get them: `threads` worker threads (one per rank, one kernel thread each)
// running the same kernel class at the same time on the node's cores, every call writing fresh output buffers, counted
// per CPU-second the threads got × min(cores, threads) — what the projection's "the node delivers its rate, shared by
// the ranks" needs, independent of other processes' load. Classes: the GEMM shapes of the rows, the fused causal
// attention at the rows' head shape (forward + backward), and an element-wise kernel at the rows' activation size.
// Every rate the projection of a bench:seed row uses comes from here, measured in the same run, so the projection
// does not depend on figures written down on another machine (configs/systems/local.toml's are only defaults).
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

const BOOTSTRAP = new URL('../../src/comm/threads/bootstrap.mjs', import.meta.url);
const ENTRY = new URL('./node-rates-worker.ts', import.meta.url).href;

/** Causal attention of one rank's microbatch: q (B,S,H,dk), k (B,S,Hkv,dk), v (B,S,Hkv,dv). */
export interface AttentionShape {
  B: number;
  S: number;
  H: number;
  Hkv: number;
  dk: number;
  dv: number;
}

/**
 * One timed class. Work is counted as the projection counts it (src/protocols/projection-time.ts):
 * - gemm: the three GEMMs of a linear layer (forward NT, input-gradient NN, weight-gradient TN), 3 · 2MKN FLOPs;
 * - attention: forward + backward, 3 × the causal forward FLOPs B·S·H·(dk+dv)·S (torchtitan's count with the
 *   mask's half skipped; the kernel's backward recomputes the scores, so it runs 5 products for the 4 counted);
 * - add: out = a + b over n floats, 12n bytes read and written (the projection's element-wise traffic is bytes
 *   read plus written);
 * - copy: n floats memcpy'd by the kernels' `copy` (the threads transport's path from 64 KiB), rotating over
 *   buffers that together exceed the caches as a step's collectives do, 4n bytes copied per call.
 */
export type RateClass =
  | { kind: 'gemm'; m: number; k: number; n: number }
  | ({ kind: 'attention' } & AttentionShape)
  | { kind: 'add'; n: number }
  | { kind: 'copy'; n: number };

/** Node rate per class (FLOP/s, or bytes/s for `add` and `copy`) from `threads` threads timed together for `ms` each. */
export async function measureNodeRates(classes: RateClass[], threads: number, ms = 400): Promise<number[]> {
  const ready = new Int32Array(new SharedArrayBuffer(8));
  const each = await Promise.all(
    Array.from(
      { length: threads },
      () =>
        new Promise<{ work: number; cpu: number }[]>((resolve, reject) => {
          const w = new Worker(BOOTSTRAP, { workerData: { __entry: ENTRY, classes, ms, ready, threads } });
          const timer = setTimeout(() => {
            void w.terminate();
            reject(new Error('node-rates: a thread gave no rates within 120 s'));
          }, 120_000);
          w.once('message', (m: { work: number; cpu: number }[]) => {
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
    const work = each.reduce((a, r) => a + r[i]!.work, 0);
    const cpu = each.reduce((a, r) => a + r[i]!.cpu, 0);
    if (cpu <= 0) throw new Error('node-rates: the threads used no measurable CPU time (is /proc mounted?)');
    return (work / cpu) * lanes;
  });
}
