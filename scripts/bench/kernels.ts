// `npm run bench:kernels [-- --threads N]`: the kernels layer against this machine's own limits, measured in the
// same run — sgemm peak (the denominator of MFU) and memcpy bandwidth (the ceiling of every streaming kernel).
//
// Accounting: a kernel's effective GB/s counts the bytes it must read plus the bytes it must write (index arrays
// and per-row scalars included), once each. memcpy_gbps is quoted the usual way (bytes copied per second); the
// `<kernel>_vs_memcpy` ratios compare against memcpy's read+write traffic (2 × memcpy_gbps), so 1.0 means "as fast
// as a copy of the same traffic". Arrays are 64 MiB (or ≈ that working set) so neither side runs from L1/L2.
// Attention is compute-bound: GFLOP/s counts the multiply-adds actually needed under the causal mask
// (2 FLOP each, key j ≤ query i only), not torchtitan's full-matrix convention, which is 2× larger.
import type { Kernels } from '../../src/tensor/kernels-api.ts';
import { machineInfo, median, timeRuns, writeReport, type BenchResult } from './common.ts';
import { MATMUL_CLASSES, MATMUL_LIBS, measureMatmulClasses } from './matmul.ts';

interface Opts {
  threads: number;
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = { threads: 2 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--threads') o.threads = Number(argv[++i]);
    else if (a.startsWith('--threads=')) o.threads = Number(a.slice('--threads='.length));
    else throw new Error(`bench:kernels: unknown argument ${a} (expected --threads N)`);
  }
  if (!Number.isInteger(o.threads) || o.threads < 1)
    throw new Error('bench:kernels: --threads must be a positive integer');
  return o;
}

const MiB = 1 << 20;

// Filling 16 M floats from Math.random takes ~0.2 s each; tile a random 64 K block instead (the values only need
// to be ordinary finite numbers of either sign).
function filled(n: number, amp = 1, seed = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  const block = Math.min(n, 1 << 16);
  for (let i = 0; i < block; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = ((s / 4294967296) * 2 - 1) * amp;
  }
  for (let i = block; i < n; i += block) a.copyWithin(i, 0, Math.min(block, n - i));
  return a;
}

function ids(n: number, limit: number, seed = 7): Int32Array {
  const a = new Int32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s % limit;
  }
  return a;
}

export async function run(argv: string[]): Promise<void> {
  const opts = parseArgs(argv);
  // The environment as the user gave it, before the kernels loader adds its defaults (reported in notes below).
  const userEnv = { ...process.env };
  const { nativeKernels } = await import('../../src/tensor/kernels.ts');
  const k: Kernels = nativeKernels();
  const info = k.blasInfo();
  const results: BenchResult[] = [];
  const notes: string[] = [];
  const push = (name: string, value: number, unit: string, note?: string) =>
    results.push(note === undefined ? { name, value, unit } : { name, value, unit, note });
  const t0 = performance.now();

  // ---- limits: sgemm peak and memcpy --------------------------------------------------------------------------
  const M = 1024;
  const A = filled(M * M, 1, 1);
  const B = filled(M * M, 1, 2);
  const C = new Float32Array(M * M);
  const sgemm: Record<number, number> = {};
  for (const t of [...new Set([1, opts.threads])].sort()) {
    k.setNumThreads(t);
    const ms = median(timeRuns(() => k.sgemm(false, false, M, M, M, 1, A, M, B, M, 0, C, M), 9, 3));
    sgemm[t] = (2 * M ** 3) / (ms * 1e6);
    push(`sgemm_${t}t_gflops`, sgemm[t]!, 'GFLOP/s', `1024³, ${t} thread${t > 1 ? 's' : ''}`);
  }
  const peak = sgemm[opts.threads]!;
  push('sgemm_peak_gflops', peak, 'GFLOP/s', `1024³ at ${opts.threads} threads (the MFU denominator)`);
  k.setNumThreads(opts.threads);

  // ---- matmul libraries per shape class (OpenBLAS, oneDNN f32, oneDNN bf16) ---------------------------------------
  if (info.onednn) {
    const mm = measureMatmulClasses(k);
    for (const [cls, rates] of Object.entries(mm.gflops)) {
      const shapesOf = MATMUL_CLASSES[cls]!.map(
        ([ta, tb, m, n, kk]) => `${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${m}×${n}×${kk}`,
      ).join(', ');
      for (const lib of MATMUL_LIBS)
        push(`matmul_${cls}_${lib}_gflops`, rates[lib], 'GFLOP/s', lib === 'openblas' ? shapesOf : undefined);
      push(
        `matmul_${cls}_onednn_f32_vs_openblas`,
        rates.onednn_f32 / rates.openblas,
        'ratio',
        '> 1: the auto rule should pick oneDNN for this class',
      );
      push(`matmul_${cls}_onednn_bf16_vs_openblas`, rates.onednn_bf16 / rates.openblas, 'ratio');
    }
    notes.push(
      `matmul classes: ${mm.rounds} rounds, libraries alternating within each; oneDNN ${info.onednnVersion} (ISA ${info.onednnIsa}), bf16 dot products ${info.bf16Dot ? 'yes' : 'no (bf16 widened to f32)'}; bf16 excludes the input conversion.`,
    );
  } else notes.push(`matmul classes skipped: ${info.onednnStatus ?? 'oneDNN unavailable'}`);
  k.setNumThreads(opts.threads);

  const big = 16 * MiB; // floats = 64 MiB
  const src = filled(big);
  const dst = new Float32Array(big);
  const copyMs = median(timeRuns(() => dst.set(src), 9, 2));
  const memcpy = (big * 4) / (copyMs * 1e6);
  push('memcpy_gbps', memcpy, 'GB/s', 'Float32Array.prototype.set, 64 MiB, bytes copied per second');
  const small = MiB; // 4 MiB: cache-resident reference point
  const s4 = src.subarray(0, small);
  const d4 = dst.subarray(0, small);
  const copy4 = median(timeRuns(() => d4.set(s4), 31, 5));
  push('memcpy_4MiB_gbps', (small * 4) / (copy4 * 1e6), 'GB/s', 'cache-resident, for reference');

  // ---- streaming kernels ----------------------------------------------------------------------------------------
  const shapes: Record<string, string> = {};
  const stream = (name: string, shape: string, bytes: number, fn: () => void, reps = 9) => {
    const ms = median(timeRuns(fn, reps, 2));
    const gbps = bytes / (ms * 1e6);
    shapes[name] = shape;
    push(`${name}_gbps`, gbps, 'GB/s', `${shape}, ${ms.toFixed(2)} ms`);
    push(`${name}_vs_memcpy`, gbps / (2 * memcpy), 'fraction');
  };
  const F = 4;

  {
    const D = 256;
    const N = big / D;
    const x = src;
    const w = filled(D, 1, 3);
    const y = dst;
    const rstd = new Float32Array(N);
    stream('rmsnorm_fwd', `N=${N} D=${D}`, (2 * N * D + N + D) * F, () => k.rmsnormFwd(x, w, y, rstd, N, D, 1e-5));
    const dx = new Float32Array(N * D);
    const dw = new Float32Array(D);
    stream('rmsnorm_bwd', `N=${N} D=${D}`, (3 * N * D + N + 3 * D) * F, () =>
      k.rmsnormBwd(y, x, w, rstd, dx, dw, N, D),
    );
  }
  {
    const n = big;
    const a = src;
    const b = filled(n, 1, 4);
    const h = dst;
    stream('swiglu_fwd', `n=${n}`, 3 * n * F, () => k.swigluFwd(a, b, h, n));
    const da = new Float32Array(n);
    const db = new Float32Array(n);
    stream('swiglu_bwd', `n=${n}`, 5 * n * F, () => k.swigluBwd(h, a, b, da, db, n));
  }
  {
    // q of the debugmodel (heads 16 × head_dim 16) at 65 536 rows; positions cycle over S = 512.
    const [S, heads, hd] = [512, 16, 16];
    const rows = big / (heads * hd);
    const cos = filled((S * hd) / 2, 1, 5);
    const sin = filled((S * hd) / 2, 1, 6);
    stream('rope', `rows=${rows} heads=${heads} dim=${hd}`, 2 * rows * heads * hd * F, () =>
      k.rope(dst, cos, sin, rows, S, heads, heads * hd, hd, 0, hd, false),
    );
  }
  {
    const V = 2048;
    const N = big / V;
    const logits = filled(N * V, 4, 8);
    const labels = ids(N, V);
    const lse = new Float32Array(N);
    stream('cross_entropy_fwd', `N=${N} V=${V}`, (N * V + 3 * N) * F, () =>
      k.crossEntropyFwd(logits, labels, lse, N, V),
    );
    const dl = new Float32Array(N * V);
    stream('cross_entropy_bwd', `N=${N} V=${V}`, (2 * N * V + 2 * N) * F, () =>
      k.crossEntropyBwd(logits, labels, lse, dl, N, V, 1 / N),
    );
  }
  {
    const [V, D] = [2048, 256];
    const N = big / D;
    const table = filled(V * D, 1, 9);
    const tok = ids(N, V, 11);
    stream('embedding_fwd', `N=${N} D=${D} V=${V}`, (2 * N * D + N) * F, () => k.embeddingFwd(table, tok, dst, N, D));
    const dtable = new Float32Array(V * D);
    stream('embedding_bwd', `N=${N} D=${D} V=${V}`, (3 * N * D + N) * F, () => k.embeddingBwd(src, tok, dtable, N, D));
  }
  {
    // MoE permutation at the debugmodel's width: R routed rows gathered from T tokens, scaled by their gates.
    const D = 256;
    const R = big / D;
    const T = R / 2;
    const tokens = filled(T * D, 1, 12);
    const idx = ids(R, T, 13);
    const gate = filled(R, 1, 14);
    stream('gather_rows', `R=${R} D=${D}`, (2 * R * D + 2 * R) * F, () => k.gatherRows(tokens, idx, dst, R, D, gate));
    const back = new Float32Array(T * D);
    stream('scatter_add_rows', `R=${R} D=${D}`, (3 * R * D + 2 * R) * F, () =>
      k.scatterAddRows(src, idx, back, R, D, gate),
    );
    const dots = new Float32Array(R);
    stream('gather_row_dot', `R=${R} D=${D}`, (2 * R * D + 2 * R) * F, () =>
      k.gatherRowDot(tokens, idx, src, dots, R, D),
    );
  }
  {
    const n = big / 4; // p, g, m, v: 4 × 16 MiB
    const p = filled(n, 1, 15);
    const g = filled(n, 1e-2, 16);
    const m = new Float32Array(n);
    const v = new Float32Array(n);
    let step = 0;
    stream('adamw', `n=${n}`, 7 * n * F, () => k.adamw(p, g, m, v, n, 8e-4, 0.9, 0.95, 1e-8, 0.1, ++step));
  }
  {
    const n = big;
    const b = filled(n, 1, 17);
    const out = new Float32Array(n);
    stream('add', `n=${n}`, 3 * n * F, () => k.add(src, b, out, n));
    stream('axpy', `n=${n}`, 3 * n * F, () => k.axpy(0.5, src, out, n));
    stream('scale', `n=${n}`, 2 * n * F, () => k.scale(out, 0.999, n));
    stream('sum_squares', `n=${n}`, n * F, () => void k.sumSquares(src, n));
  }

  // ---- attention (compute-bound) --------------------------------------------------------------------------------
  const attention = (
    name: string,
    B: number,
    S: number,
    Hq: number,
    Hkv: number,
    dk: number,
    dv: number,
    reps: number,
  ) => {
    const q = filled(B * S * Hq * dk, 1, 21);
    const kk = filled(B * S * Hkv * dk, 1, 22);
    const v = filled(B * S * Hkv * dv, 1, 23);
    const o = new Float32Array(B * S * Hq * dv);
    const lse = new Float32Array(B * Hq * S);
    const dO = filled(o.length, 1, 24);
    const dq = new Float32Array(q.length);
    const dkk = new Float32Array(kk.length);
    const dvv = new Float32Array(v.length);
    const scale = 1 / Math.sqrt(dk);
    const pairs = B * Hq * ((S * (S + 1)) / 2);
    const shape = `B=${B} S=${S} Hq=${Hq} Hkv=${Hkv} dk=${dk} dv=${dv}`;
    shapes[name] = shape;
    const io = (B * S * (Hq * dk + Hkv * (dk + dv) + Hq * dv) + B * Hq * S) * F;
    const fwdMs = median(timeRuns(() => k.attentionFwd(q, kk, v, o, lse, B, S, Hq, Hkv, dk, dv, scale), reps, 2));
    const bwdMs = median(
      timeRuns(() => k.attentionBwd(dO, q, kk, v, o, lse, dq, dkk, dvv, B, S, Hq, Hkv, dk, dv, scale), reps, 2),
    );
    const fwdGf = (2 * (dk + dv) * pairs) / (fwdMs * 1e6);
    const bwdGf = (2 * (3 * dk + 2 * dv) * pairs) / (bwdMs * 1e6);
    push(`${name}_fwd_gflops`, fwdGf, 'GFLOP/s', `${shape}, ${fwdMs.toFixed(2)} ms, causal FLOPs`);
    push(`${name}_bwd_gflops`, bwdGf, 'GFLOP/s', `${bwdMs.toFixed(2)} ms`);
    push(`${name}_fwd_vs_sgemm_peak`, fwdGf / peak, 'fraction');
    push(`${name}_bwd_vs_sgemm_peak`, bwdGf / peak, 'fraction');
    const fwdGbps = (io + B * Hq * S * F) / (fwdMs * 1e6);
    push(`${name}_fwd_gbps`, fwdGbps, 'GB/s', 'q, k, v read + o, lse written (compute-bound: low by design)');
    push(`${name}_fwd_vs_memcpy`, fwdGbps / (2 * memcpy), 'fraction');
    const bwdGbps = (2 * io + B * S * Hq * dv * F) / (bwdMs * 1e6);
    push(`${name}_bwd_gbps`, bwdGbps, 'GB/s');
    push(`${name}_bwd_vs_memcpy`, bwdGbps / (2 * memcpy), 'fraction');
    // The bf16 kernels (bf16 compute: pair products, P and dS rounded) on the same inputs rounded; f32 and bf16
    // alternate so drift in the machine's speed hits both alike.
    if (dk % 2 === 0 && dv % 2 === 0) {
      const r16 = (x: Float32Array) => {
        const h = new Uint16Array(x.length);
        k.toBf16(x, h, x.length);
        return h;
      };
      const [q16, k16, v16, dO16] = [r16(q), r16(kk), r16(v), r16(dO)];
      const o16 = new Uint16Array(o.length);
      const fwd16: number[] = [];
      const bwd16: number[] = [];
      const fwd32: number[] = [];
      const bwd32: number[] = [];
      for (let i = 0; i < reps; i++) {
        fwd32.push(
          ...timeRuns(() => k.attentionFwd(q, kk, v, o, lse, B, S, Hq, Hkv, dk, dv, scale), 1, i === 0 ? 1 : 0),
        );
        fwd16.push(
          ...timeRuns(
            () => k.attentionFwdBf16(q16, k16, v16, o16, lse, B, S, Hq, Hkv, dk, dv, scale),
            1,
            i === 0 ? 1 : 0,
          ),
        );
        bwd32.push(
          ...timeRuns(() => k.attentionBwd(dO, q, kk, v, o, lse, dq, dkk, dvv, B, S, Hq, Hkv, dk, dv, scale), 1, 0),
        );
        bwd16.push(
          ...timeRuns(
            () => k.attentionBwdBf16(dO16, q16, k16, v16, o16, lse, dq, dkk, dvv, B, S, Hq, Hkv, dk, dv, scale),
            1,
            i === 0 ? 1 : 0,
          ),
        );
      }
      const [f16, b16, f32, b32] = [median(fwd16), median(bwd16), median(fwd32), median(bwd32)];
      push(`${name}_bf16_fwd_gflops`, (2 * (dk + dv) * pairs) / (f16 * 1e6), 'GFLOP/s', `${f16.toFixed(2)} ms`);
      push(`${name}_bf16_bwd_gflops`, (2 * (3 * dk + 2 * dv) * pairs) / (b16 * 1e6), 'GFLOP/s', `${b16.toFixed(2)} ms`);
      push(`${name}_bf16_fwd_speedup`, f32 / f16, 'ratio', `f32 ${f32.toFixed(2)} ms, alternating`);
      push(`${name}_bf16_bwd_speedup`, b32 / b16, 'ratio', `f32 ${b32.toFixed(2)} ms, alternating`);
    }
  };
  attention('attention', 4, 512, 16, 16, 16, 16, 9); // Llama4 debugmodel
  attention('attention_mla', 1, 512, 16, 16, 192, 128, 5); // DeepSeek-V3 MLA head dims (128 nope + 64 rope, v 128)

  notes.push(
    `BLAS: ${info.config ?? info.name}; OPENBLAS_CORETYPE ${
      info.coretypeSource === 'auto'
        ? `was unset, so the kernels addon set it to ${info.corename} for this process (ISA-based; OpenBLAS's own detection picks SSE3 "Prescott" on CPU models it does not know)`
        : info.coretypeSource === 'env'
          ? `= ${userEnv.OPENBLAS_CORETYPE} (user)`
          : `unset; OpenBLAS detected ${info.corename}`
    }.`,
  );
  notes.push(
    userEnv.OMP_WAIT_POLICY === undefined && userEnv.GOMP_SPINCOUNT === undefined
      ? 'OMP_WAIT_POLICY was unset, so the kernels loader set it to passive for this process (libgomp spinning starves OpenBLAS threads on 2 shared cores).'
      : `OpenMP wait policy from the user environment: OMP_WAIT_POLICY=${userEnv.OMP_WAIT_POLICY ?? '(unset)'} GOMP_SPINCOUNT=${userEnv.GOMP_SPINCOUNT ?? '(unset)'}.`,
  );
  notes.push(
    'GB/s = (bytes read + bytes written) / time; <kernel>_vs_memcpy = that / (2 × memcpy_gbps). 64 MiB arrays exceed L2 but may sit in a large L3; memcpy is measured at the same size.',
  );
  notes.push(
    `Wall time of this bench: ${((performance.now() - t0) / 1000).toFixed(1)} s. Medians of 5–31 runs after warm-up; the machine may be shared, so expect noise.`,
  );

  writeReport({
    bench: 'kernels',
    when: new Date().toISOString(),
    machine: machineInfo(`${info.name}${info.config ? ` (${info.config})` : ''}`, userEnv),
    config: { threads: opts.threads, shapes, corename: info.corename, ompWaitPolicy: info.ompWaitPolicy ?? null },
    results,
    notes,
  });
}
