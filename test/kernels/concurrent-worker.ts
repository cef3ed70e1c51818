// Runs native sgemm and attention repeatedly in a worker thread, starting together with its sibling (Atomics
// barrier), and reports the first result plus whether every repetition reproduced it bit for bit.
import { parentPort, workerData } from 'node:worker_threads';
import { nativeKernels } from '../../src/tensor/kernels.ts';

interface Job {
  barrier: Int32Array;
  parties: number;
  reps: number;
  M: number;
  N: number;
  K: number;
  A: Float32Array;
  B: Float32Array;
  attn: { q: Float32Array; k: Float32Array; v: Float32Array; B: number; S: number; Hq: number; Hkv: number; d: number };
}

const job = workerData as Job;
const k = nativeKernels();
const { M, N, K, A, B, attn } = job;

Atomics.add(job.barrier, 0, 1);
Atomics.notify(job.barrier, 0);
while (Atomics.load(job.barrier, 0) < job.parties) Atomics.wait(job.barrier, 0, Atomics.load(job.barrier, 0), 50);

let first: Float32Array | null = null;
let firstO: Float32Array | null = null;
let stable = true;
for (let rep = 0; rep < job.reps; rep++) {
  const C = new Float32Array(M * N);
  k.sgemm(false, true, M, N, K, 1, A, K, B, K, 0, C, N);
  const o = new Float32Array(attn.B * attn.S * attn.Hq * attn.d);
  const lse = new Float32Array(attn.B * attn.Hq * attn.S);
  k.attentionFwd(attn.q, attn.k, attn.v, o, lse, attn.B, attn.S, attn.Hq, attn.Hkv, attn.d, attn.d, 0.25);
  if (!first || !firstO) {
    first = C;
    firstO = o;
  } else {
    stable &&= C.every((x, i) => x === first![i]) && o.every((x, i) => x === firstO![i]);
  }
}
parentPort!.postMessage({ C: first, o: firstO, stable });
