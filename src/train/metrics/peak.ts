// The peak FLOP/s that MFU is measured against. torchtitan uses a table of datasheet bf16 peaks per GPU; we
// compute in fp32 on CPUs through BLAS, so the honest peak is the machine's own sgemm rate, measured at
// startup: a few square sgemms (N = 512 native, 128 on the TypeScript reference), best trial wins. Measure it
// once per node with all the node's cores (before ranks start) and share it: a rank's peak is the node's peak
// divided by the ranks on the node. `metrics.peak_flops` overrides the measurement (e.g. to compare against a
// datasheet figure).

import type { Kernels } from '../../tensor/kernels-api.ts';
import { getKernels } from '../../tensor/kernels.ts';
import type { ParamDtype } from '../../tensor/precision.ts';

export interface SgemmPeak {
  gflops: number;
  n: number;
  threads: number;
  impl: 'native' | 'ts';
  blas: string;
  /** GFLOP/s of every timed trial. */
  trials: number[];
}

export interface SgemmPeakOptions {
  /** Matrix size (M = N = K). */
  n?: number;
  /** Stop timing after this many ms (at least `minTrials` trials run). */
  budgetMs?: number;
  minTrials?: number;
  /** BLAS threads to measure with (restored afterwards); default: the kernels' current setting. */
  threads?: number;
  /**
   * The compute dtype whose matmul peak to measure: float32 (sgemm, the default) or bfloat16 (gemmBf16 on inputs
   * rounded beforehand: the library's bf16 rate, the denominator of a bf16 run's MFU).
   */
  dtype?: ParamDtype;
}

/** Measures with `k` (default: this thread's kernels, getKernels()). */
export function measureSgemmPeak(k: Kernels = getKernels(), opts: SgemmPeakOptions = {}): SgemmPeak {
  // 1024² is where this machine's sgemm rate levels off (512² reads ~8 % lower, which would flatter MFU).
  const n = opts.n ?? (k.impl === 'native' ? 1024 : 128);
  const budgetMs = opts.budgetMs ?? 400;
  const minTrials = opts.minTrials ?? 3;
  const before = k.blasInfo();
  if (opts.threads !== undefined) k.setNumThreads(opts.threads);
  try {
    const a = new Float32Array(n * n);
    const b = new Float32Array(n * n);
    const c = new Float32Array(n * n);
    for (let i = 0; i < a.length; i++) {
      a[i] = ((i * 7919) % 1000) / 1000 - 0.5;
      b[i] = ((i * 104729) % 1000) / 1000 - 0.5;
    }
    let mm = () => k.sgemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n);
    if (opts.dtype === 'bfloat16') {
      const a16 = new Uint16Array(n * n);
      const b16 = new Uint16Array(n * n);
      k.toBf16(a, a16, a16.length);
      k.toBf16(b, b16, b16.length);
      mm = () => k.gemmBf16(false, false, n, n, n, 1, a16, n, b16, n, 0, c, n);
    }
    mm(); // warm-up: thread pool start, page faults
    const flop = 2 * n * n * n;
    const trials: number[] = [];
    const start = performance.now();
    while (trials.length < minTrials || performance.now() - start < budgetMs) {
      const t0 = performance.now();
      mm();
      const ms = Math.max(performance.now() - t0, 1e-6);
      trials.push(flop / (ms * 1e6));
      if (trials.length >= 1000) break;
    }
    const info = k.blasInfo();
    return {
      gflops: Math.max(...trials),
      n,
      threads: info.threads,
      impl: k.impl,
      blas: [
        info.matmulMode === 'blas' || !info.onednn ? info.name : `onednn ${info.onednnVersion ?? ''}`.trim(),
        info.matmulMode === 'blas' || !info.onednn ? info.corename : info.onednnIsa,
        opts.dtype === 'bfloat16' ? 'bf16' : '',
      ]
        .filter(Boolean)
        .join(' '),
      trials,
    };
  } finally {
    if (opts.threads !== undefined) k.setNumThreads(before.threads);
  }
}

export interface PeakFlops {
  /** FLOP/s of one rank. */
  flops: number;
  /** Where the figure comes from, for the run's log and metrics.jsonl. */
  source: string;
}

/**
 * Per-rank peak: `metrics.peak_flops` if set (> 0), else the node's measured sgemm GFLOP/s shared by the ranks
 * running on the node.
 */
export function resolvePeakFlops(o: {
  configPeakFlops: number;
  nodeSgemmGflops?: number;
  ranksOnNode: number;
}): PeakFlops {
  if (o.configPeakFlops > 0)
    return {
      flops: o.configPeakFlops,
      source: `metrics.peak_flops = ${o.configPeakFlops.toExponential(3)} FLOP/s per rank`,
    };
  if (o.nodeSgemmGflops === undefined || !(o.nodeSgemmGflops > 0)) {
    throw new Error(
      'no peak FLOP/s for MFU: measure the sgemm peak at startup (measureSgemmPeak) or set [metrics] peak_flops',
    );
  }
  const r = Math.max(1, o.ranksOnNode);
  return {
    flops: (o.nodeSgemmGflops * 1e9) / r,
    source: `measured sgemm peak ${o.nodeSgemmGflops.toFixed(1)} GFLOP/s per node / ${r} rank${r === 1 ? '' : 's'} on the node`,
  };
}
