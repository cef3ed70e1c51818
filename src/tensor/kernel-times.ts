// MOE_ACTORS_KERNEL_TIMES=<dir>: every kernel call of a thread (a rank of the threads transport, an MPI rank's
// process, a bench's worker) timed and tallied by kernel — matmuls by transposes and shape — and written to
// `<dir>/kernels-<pid>-<thread>.json` as it goes (every 500 calls, after an idle second, and at exit), for
// `npm run kernel-times -- <dir>` to print. Each native call is synchronous, so the wall time around it is its
// cost, descheduling included. Meant for "which kernel is slow on which rank" (docs/benchmarks.md: the per-rank
// element-wise and copy times that showed where bench:seed's projection was short); off unless the variable is set.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import type { Kernels } from './kernels-api.ts';

/** Per kernel (matmuls: `sgemm NT 2048×256×256`): milliseconds, calls, and FLOPs for the matmuls. */
export type KernelTally = Record<string, { ms: number; calls: number; flops: number }>;

const GEMMS = new Set(['sgemm', 'sgemmBf16', 'gemmBf16']);

/** Whether a tally's name (`sgemm NT 2048×256×256`, `adamw`) is a matmul's. */
export const isGemmName = (name: string): boolean => GEMMS.has(name.split(' ')[0]!);

/** A matmul call's transposes and shape, from its arguments (null for any other kernel). */
export interface GemmCall {
  ta: boolean;
  tb: boolean;
  M: number;
  N: number;
  K: number;
}

/**
 * A view of `k` that times every call (wall time around the synchronous native call) and hands it to `onCall`
 * with the kernel's name and, for a matmul, its transposes and shape. Shared by MOE_ACTORS_KERNEL_TIMES and
 * bench:model-profile.
 */
export function timingView(k: Kernels, onCall: (name: string, ms: number, gemm: GemmCall | null) => void): Kernels {
  return new Proxy(k, {
    get(target, prop) {
      const v = Reflect.get(target, prop) as unknown;
      if (typeof v !== 'function' || prop === 'blasInfo') return v;
      const fn = v as (...a: unknown[]) => unknown;
      const name = String(prop);
      const gemm = GEMMS.has(name);
      return (...a: unknown[]) => {
        const t0 = performance.now();
        const r = fn.apply(target, a);
        const ms = performance.now() - t0;
        if (gemm) {
          const [ta, tb, M, N, K] = a as [boolean, boolean, number, number, number];
          onCall(name, ms, { ta, tb, M, N, K });
        } else onCall(name, ms, null);
        return r;
      };
    },
  });
}

export function timedKernels(k: Kernels, dir: string): Kernels {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `kernels-${process.pid}-${threadId}.json`);
  const tally: KernelTally = {};
  let calls = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    timer = undefined;
    writeFileSync(file, JSON.stringify(tally));
  };
  // The last calls before the process (or this worker) ends: the idle timer is unref'd and may not get to run.
  process.once('exit', flush);
  return timingView(k, (kernel, ms, g) => {
    const name = g ? `${kernel} ${g.ta ? 'T' : 'N'}${g.tb ? 'T' : 'N'} ${g.M}×${g.N}×${g.K}` : kernel;
    const e = (tally[name] ??= { ms: 0, calls: 0, flops: 0 });
    e.ms += ms;
    e.calls++;
    e.flops += g ? 2 * g.M * g.N * g.K : 0;
    if (++calls % 500 === 0) flush();
    else if (!timer) {
      timer = setTimeout(flush, 1000);
      timer.unref();
    }
  });
}
