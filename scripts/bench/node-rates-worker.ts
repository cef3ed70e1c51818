// One thread of measureNodeRates (node-rates.ts): a rank's kernel thread running each class beside the others, every
// call writing fresh output buffers as the training's allocations do.
import { parentPort, workerData } from 'node:worker_threads';
import { getKernels } from '../../src/tensor/kernels.ts';
import type { RateClass } from './node-rates.ts';
import { statCpuSeconds } from './cpu-share.ts';

interface Args {
  classes: RateClass[];
  ms: number;
  ready: Int32Array;
  threads: number;
}

const { classes, ms, ready, threads } = workerData as Args;
const k = getKernels();
k.setNumThreads(1);
const fill = (n: number, p: number) => new Float32Array(n).map((_, i) => ((i * p) % 1000) / 1000 - 0.5);

/** A call of the class returning the work it did (FLOPs or bytes, as node-rates.ts counts them). */
function callOf(c: RateClass): () => number {
  if (c.kind === 'gemm') {
    const { m, k: kk, n } = c;
    const x = fill(m * kk, 7919);
    const w = fill(n * kk, 104729);
    const y = fill(m * n, 3571);
    return () => {
      k.sgemm(false, true, m, n, kk, 1, x, kk, w, kk, 0, new Float32Array(m * n), n);
      k.sgemm(false, false, m, kk, n, 1, y, n, w, kk, 0, new Float32Array(m * kk), kk);
      k.sgemm(true, false, n, kk, m, 1, y, n, x, kk, 0, new Float32Array(n * kk), kk);
      return 3 * 2 * m * kk * n;
    };
  }
  if (c.kind === 'attention') {
    const { B, S, H, Hkv, dk, dv } = c;
    const q = fill(B * S * H * dk, 7919);
    const kt = fill(B * S * Hkv * dk, 104729);
    const v = fill(B * S * Hkv * dv, 3571);
    const dout = fill(B * S * H * dv, 6007);
    const scale = 1 / Math.sqrt(dk);
    return () => {
      const o = new Float32Array(B * S * H * dv);
      const lse = new Float32Array(B * H * S);
      k.attentionFwd(q, kt, v, o, lse, B, S, H, Hkv, dk, dv, scale);
      const dq = new Float32Array(q.length);
      const dkOut = new Float32Array(kt.length);
      const dvOut = new Float32Array(v.length);
      k.attentionBwd(dout, q, kt, v, o, lse, dq, dkOut, dvOut, B, S, H, Hkv, dk, dv, scale);
      return 3 * B * S * H * (dk + dv) * S;
    };
  }
  if (c.kind === 'copy') {
    // A step's collectives copy buffers that were last touched a layer ago: cold. 64 MiB of sources and
    // destinations per thread is beyond any L2 and a VM's share of L3.
    const sets = Math.max(2, Math.ceil((64 << 20) / (8 * c.n)));
    const src = Array.from({ length: sets }, (_, i) => fill(c.n, 7919 + i));
    const dst = Array.from({ length: sets }, () => new Float32Array(c.n).fill(1));
    let i = 0;
    return () => {
      const j = i++ % sets;
      k.copy(src[j]!, dst[j]!, c.n, false);
      return 4 * c.n;
    };
  }
  const a = fill(c.n, 7919);
  const b = fill(c.n, 104729);
  return () => {
    k.add(a, b, new Float32Array(c.n), c.n);
    return 12 * c.n;
  };
}

const calls = classes.map(callOf);
// Warm up for a while, not one call: oneDNN JITs its kernels on the first, and glibc raises its mmap threshold
// only after freeing mmapped chunks, so early fresh outputs of 128 KiB or more are mmapped and page-faulted in.
// (Timed without bench:seed's peak measurement before it, a fresh process's first rates read as low as a
// quarter of the second's; with MALLOC_MMAP_THRESHOLD_=32 MiB they did not. This machine was too noisy to show
// how much of that the warm-up removes.)
for (const c of calls) {
  const t0 = performance.now();
  do c();
  while (performance.now() - t0 < 100);
}
// Every thread starts timing together (the 30 s bound only guards a peer that died while starting).
Atomics.add(ready, 0, 1);
const deadline = Date.now() + 30_000;
while (Atomics.load(ready, 0) < threads) {
  if (Date.now() > deadline) throw new Error(`node-rates: waited 30 s for ${threads} threads to start`);
  Atomics.wait(ready, 1, 0, 5);
}
// This thread's CPU seconds: a node shared with other processes gives the threads less than its cores, so the rate
// per CPU-second of the threads, not per wall second, is the node's own.
const cpuSeconds = () => statCpuSeconds('/proc/thread-self/stat');
const out = calls.map((c) => {
  let work = 0;
  const c0 = cpuSeconds();
  const t0 = performance.now();
  while (performance.now() - t0 < ms) work += c();
  return { work, cpu: cpuSeconds() - c0 };
});
parentPort!.postMessage(out);
