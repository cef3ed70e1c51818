// MOE_ACTORS_KERNEL_TIMES=<dir>: every kernel call of a thread (a rank of the threads transport, an MPI rank's
// process, a bench's worker) timed and tallied by kernel — matmuls by transposes and shape — and written to
// `<dir>/kernels-<pid>-<thread>.json` as it goes (every 500 calls and at the end of an idle second), for
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
  return new Proxy(k, {
    get(target, prop) {
      const v = Reflect.get(target, prop) as unknown;
      if (typeof v !== 'function' || prop === 'blasInfo') return v;
      const fn = v as (...a: unknown[]) => unknown;
      return (...a: unknown[]) => {
        const t0 = performance.now();
        const r = fn.apply(target, a);
        const ms = performance.now() - t0;
        let name = String(prop);
        let flops = 0;
        if (GEMMS.has(name)) {
          const [ta, tb, M, N, K] = a as [boolean, boolean, number, number, number];
          name = `${name} ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${M}×${N}×${K}`;
          flops = 2 * M * N * K;
        }
        const e = (tally[name] ??= { ms: 0, calls: 0, flops: 0 });
        e.ms += ms;
        e.calls++;
        e.flops += flops;
        if (++calls % 500 === 0) flush();
        else if (!timer) {
          timer = setTimeout(flush, 1000);
          timer.unref();
        }
        return r;
      };
    },
  });
}
