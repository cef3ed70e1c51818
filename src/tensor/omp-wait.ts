// The OpenMP wait policy of a process, chosen before libgomp reads it (when the native kernels load).
//
// Passive (sleep at once) was chosen because spinning libgomp workers steal the core that OpenBLAS's own threads,
// another rank or another process needs next: a 2-thread RMSNorm took 10 ms beside 2 spinning threads vs 0.3 ms
// passive (commit ed5076b). Once every matmul runs on oneDNN, the matmuls share the libgomp team with the fused
// kernels, and a bf16 step opens ~1,000 parallel regions, each waking a sleeping worker: a bounded spin saves
// that wake-up. So spin only where passive's reason does not apply: no OpenBLAS threads in the process (every
// matmul on oneDNN), no more compute threads of the job on the node than cores, and a node that is otherwise idle
// when the job starts (/proc/stat over 200 ms, src/tensor/node-busy.ts: the 1-minute load average lagged a minute
// behind and kept a quiet node passive). The last is not optional: on the 2-core dev VM at load ~6 from other
// processes a bf16 step took 372 ms passive, 536 ms with GOMP_SPINCOUNT=3000, 1,859 ms with 30,000 and 1,886 ms
// active (a spinning thread burns the timeslice its descheduled partner needs to reach the barrier).
// Anything unknown stays passive. A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT always wins.

/**
 * libgomp spin iterations before a worker sleeps (its default is 300,000; passive is 0). Within the range
 * 20,000–200,000 that took a bf16 debugmodel step from 297 to 200–225 ms at load ~4 (session 2 of issue 11); an
 * idle worker stops spinning within about a millisecond. docs/benchmarks.md says how to re-measure it.
 */
export const OMP_SPIN_COUNT = 30_000;

export interface OmpWaitInputs {
  /** The process environment as the user gave it (only OMP_WAIT_POLICY, GOMP_SPINCOUNT, MOE_ACTORS_MATMUL read). */
  env: Readonly<Record<string, string | undefined>>;
  /** Whether the native kernels were built with oneDNN (without it every matmul is OpenBLAS). */
  onednnBuilt: boolean;
  /**
   * Whether the CPU has AVX-512 (oneDNN's avx512_core): without it MOE_ACTORS_MATMUL=auto puts every f32 matmul on
   * OpenBLAS, which is as fast or faster there (dnnl.cc matmulUseDnnl).
   */
  avx512: boolean;
  /**
   * Compute threads this process's job puts on the node: ranks on the node (MPI local ranks, or the ranks of a
   * threads/inproc job) × OpenMP threads per rank. Undefined when nobody said (benches, tools): stays passive.
   */
  computeThreads?: number | undefined;
  /** Cores of the node (os.availableParallelism()). */
  cores: number;
  /**
   * Cores busy with other work just before the job starts, and how that was measured (nodeBusy(), which blocks
   * for its window: called only when everything else allows a spin); undefined or NaN = unknown: passive.
   */
  busy?: () => { busyCores: number; busySource: string };
}

export interface OmpWaitChoice {
  /** Variables to set in the process environment before the kernels load (empty when the user chose). */
  set: Record<string, string>;
  mode: 'user' | 'passive' | 'spin';
  /** One line for start-up output and bench notes. */
  line: string;
}

export function chooseOmpWait(i: OmpWaitInputs): OmpWaitChoice {
  const { env } = i;
  if (env.OMP_WAIT_POLICY !== undefined || env.GOMP_SPINCOUNT !== undefined)
    return {
      set: {},
      mode: 'user',
      line: `OpenMP wait from the environment: OMP_WAIT_POLICY=${env.OMP_WAIT_POLICY ?? '(unset)'} GOMP_SPINCOUNT=${env.GOMP_SPINCOUNT ?? '(unset)'}`,
    };
  const passive = (why: string): OmpWaitChoice => ({
    set: { OMP_WAIT_POLICY: 'passive' },
    mode: 'passive',
    line: `OpenMP wait passive: ${why}`,
  });
  if (!i.onednnBuilt) return passive('matmuls on OpenBLAS (no oneDNN), whose threads spinning workers would starve');
  if (env.MOE_ACTORS_MATMUL === 'blas')
    return passive('MOE_ACTORS_MATMUL=blas puts matmuls on OpenBLAS, whose threads spinning workers would starve');
  if (env.MOE_ACTORS_MATMUL !== 'onednn' && !i.avx512)
    return passive(
      'matmuls on OpenBLAS (no AVX-512: oneDNN f32 is not faster here), whose threads spinning workers would starve',
    );
  const t = i.computeThreads;
  if (t === undefined || !Number.isFinite(t) || t < 1) return passive('the compute threads on this node are unknown');
  if (t > i.cores) return passive(`${t} compute threads on ${i.cores} cores (oversubscribed)`);
  const measured = i.busy?.();
  const busy = measured?.busyCores;
  const how = measured?.busySource ?? 'unknown';
  if (busy === undefined || !Number.isFinite(busy)) return passive('the node load is unknown');
  // Half a core of slack: a quiet node is rarely measured at exactly 0.
  if (busy > i.cores - t + 0.5)
    return passive(`${t} compute threads on ${i.cores} cores with the node already busy (${how})`);
  return {
    set: { GOMP_SPINCOUNT: String(OMP_SPIN_COUNT) },
    mode: 'spin',
    line: `OpenMP wait: spin ${OMP_SPIN_COUNT} then sleep (GOMP_SPINCOUNT): every matmul on oneDNN, ${t} compute thread${t === 1 ? '' : 's'} on ${i.cores} cores, ${how}`,
  };
}
