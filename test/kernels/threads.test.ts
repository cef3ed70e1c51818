// The threads transport runs one rank per worker thread, each loading the addon and calling BLAS and the OpenMP
// kernels at the same time as its siblings. Two workers start together (Atomics barrier) and repeat sgemm and
// attention on different data; every result must match the single-threaded reference and be reproducible.
import { describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { nativeKernels, refKernels } from '../../src/tensor/kernels.ts';
import { expectClose, randF32, rng } from './helpers.ts';

const bootstrap = new URL('./worker-bootstrap.mjs', import.meta.url);
const entry = new URL('./concurrent-worker.ts', import.meta.url).href;

describe('native kernels from concurrent worker threads', () => {
  it('sgemm and attention in 2 workers at once give the reference results, repeatably', async () => {
    const [M, N, K] = [192, 160, 200];
    const attnShape = { B: 2, S: 96, Hq: 4, Hkv: 2, d: 16 };
    const barrier = new Int32Array(new SharedArrayBuffer(4));
    const jobs = [1, 2].map((seed) => {
      const r = rng(seed);
      const { B, S, Hq, Hkv, d } = attnShape;
      return {
        barrier,
        parties: 2,
        reps: 25,
        M,
        N,
        K,
        A: randF32(M * K, r),
        B: randF32(N * K, r),
        attn: {
          ...attnShape,
          q: randF32(B * S * Hq * d, r),
          k: randF32(B * S * Hkv * d, r),
          v: randF32(B * S * Hkv * d, r),
        },
      };
    });
    const results = await Promise.all(
      jobs.map(
        (job) =>
          new Promise<{ C: Float32Array; o: Float32Array; stable: boolean }>((resolve, reject) => {
            const w = new Worker(bootstrap, { workerData: { ...job, __entry: entry } });
            w.once('message', (m) => {
              resolve(m);
              void w.terminate();
            });
            w.once('error', reject);
            w.once('exit', (code) => code !== 0 && reject(new Error(`worker exited with ${code}`)));
          }),
      ),
    );
    results.forEach((res, i) => {
      const job = jobs[i]!;
      expect(res.stable).toBe(true);
      const want = new Float32Array(M * N);
      refKernels.sgemm(false, true, M, N, K, 1, job.A, K, job.B, K, 0, want, N);
      expectClose(res.C, want, 1e-5, `worker ${i} sgemm`);
      const { B, S, Hq, Hkv, d, q, k, v } = job.attn;
      const o = new Float32Array(B * S * Hq * d);
      refKernels.attentionFwd(q, k, v, o, new Float32Array(B * Hq * S), B, S, Hq, Hkv, d, d, 0.25);
      expectClose(res.o, o, 1e-4, `worker ${i} attention`);
    });
    // The main thread's own instance is independent of the workers' and still works afterwards.
    expect(nativeKernels().sumSquares(Float32Array.of(3, 4), 2)).toBe(25);
  });
});
