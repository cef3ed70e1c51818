// `npm run bench:model [-- --reps N --warmup N --threads N --batch B --seq S --flavor F --no-torch]`: one rank
// training torchtitan's Llama4 debugmodel (batch 4 × seq 512, 2 BLAS threads by default) with SingleRankTrainer —
// zero grads → forward → backward → clip → expert-bias update → AdamW — against the machine's own limit.
//
// Three trainings of the model run in one sitting, their steps interleaved (one step of each per round, order
// rotating): every matmul on OpenBLAS in fp32 (the path before oneDNN), fp32 on the per-shape-class library
// (oneDNN where built in), and bf16 mixed precision (mixed_precision_param = bfloat16).
//
//   train_tps           tokens per second of the full step, fp32 on the chosen library (median over --reps steps
//                       after --warmup steps); train_tps_openblas_fp32 and train_tps_bf16 the same for the others
//   fp32_speedup        train_tps / train_tps_openblas_fp32; bf16_speedup = train_tps_bf16 / train_tps_openblas_fp32
//   mfu_bf16            the bf16 run against the bf16 matmul peak (gemmBf16, N = 1024, sampled like the fp32 one)
//   sgemm_peak_gflops   the MFU denominator, measured in this run with the same BLAS settings: after every timed
//                       step, measureSgemmPeak with square sgemms of N = 1024 (as bench:kernels; the rate plateaus
//                       from there, while N = 512, the trainer's quick startup default, reads ~8 % lower here), best
//                       trial of a ~150 ms burst; the median of those samples. Sampling between the steps means the
//                       peak and the steps see the same machine load.
//   mfu                 train_tps · flopsPerToken(seq) / peak, torchtitan's formula (6·active non-embedding params
//                       + 6·L·H·head_dim·seq, no causal discount)
//   fwd_ms, bwd_ms, optim_ms   medians of the step's phases (SingleRankTrainer's own phase clock; optim = clip +
//                       expert-bias update + AdamW + LR scheduler)
//   peak_memory_bytes   the rank's tracked allocator peak over the timed steps (params + grads + AdamW state +
//                       live activations); pooled idle activation buffers are reported as reserved_memory_bytes
//   torch_peer_*        Debian's PyTorch (/usr/bin/python3) training the same model and batch with the project's
//                       PyTorch reference (scripts/bench/torch_peer.py), OPENBLAS_NUM_THREADS = --threads and the
//                       same OPENBLAS_CORETYPE; skipped with a note when torch is absent or with --no-torch.
//
// Environment: the kernels loader sets OPENBLAS_CORETYPE (from the ISA, unless set) and OMP_WAIT_POLICY=passive
// (unless OMP_WAIT_POLICY/GOMP_SPINCOUNT is set) for this process; both are reported in the notes.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { resolveModelConfig } from '../../src/models/config.ts';
import { countParams, flopsPerToken } from '../../src/models/counts.ts';
import { parseAcMode } from '../../src/models/model/ac.ts';
import { Model, type Microbatch } from '../../src/models/model/model.ts';
import { SingleRankTrainer } from '../../src/models/model/train-step.ts';
import { buildModelSpec } from '../../src/models/spec.ts';
import { measureSgemmPeak } from '../../src/train/metrics/peak.ts';
import { kernelsFor } from '../../src/tensor/precision.ts';
import { ROOT, loadNote, machineInfo, median, range, writeReport, type BenchResult } from './common.ts';

const PEAK_N = 1024;

interface Opts {
  reps: number;
  warmup: number;
  threads: number;
  batch: number;
  seq: number;
  flavor: string;
  torch: boolean;
  torchSteps: number;
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = {
    reps: 12,
    warmup: 3,
    threads: 2,
    batch: 4,
    seq: 512,
    flavor: 'debugmodel',
    torch: true,
    torchSteps: 3,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`bench:model: ${a} needs a non-negative integer`);
      return v;
    };
    if (a === '--reps') o.reps = Math.max(1, num());
    else if (a === '--warmup') o.warmup = num();
    else if (a === '--threads') o.threads = Math.max(1, num());
    else if (a === '--batch') o.batch = Math.max(1, num());
    else if (a === '--seq') o.seq = Math.max(1, num());
    else if (a === '--torch-steps') o.torchSteps = Math.max(1, num());
    else if (a === '--flavor') o.flavor = argv[++i]!;
    else if (a === '--no-torch') o.torch = false;
    else throw new Error(`bench:model: unknown argument ${a}`);
  }
  return o;
}

/** Deterministic pseudo-random batches (a fresh one per step, cycling over `n`), next-token labels. */
function batches(n: number, B: number, S: number, V: number): Microbatch[] {
  let s = 12345;
  const out: Microbatch[] = [];
  for (let b = 0; b < n; b++) {
    const tokens = new Int32Array(B * S);
    for (let i = 0; i < tokens.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      tokens[i] = s % V;
    }
    const labels = new Int32Array(B * S);
    for (let r = 0; r < B; r++) for (let j = 0; j < S; j++) labels[r * S + j] = tokens[r * S + ((j + 1) % S)]!;
    out.push({ tokens, labels, B, S });
  }
  return out;
}

interface TorchPeer {
  step_s_median: number;
  step_s_min: number;
  step_s_max: number;
  steps: number;
  tokens_per_step: number;
  torch: string;
  threads: number;
}

function runTorchPeer(o: Opts, env: NodeJS.ProcessEnv): { peer: TorchPeer | null; note: string } {
  const py = '/usr/bin/python3';
  if (!existsSync(py)) return { peer: null, note: `torch peer skipped: ${py} not found` };
  const probe = spawnSync(py, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  if (probe.status !== 0)
    return {
      peer: null,
      note: `torch peer skipped: ${py} has no torch (${(probe.stderr || '').trim().split('\n').at(-1)})`,
    };
  const r = spawnSync(
    py,
    [
      join(ROOT, 'scripts', 'bench', 'torch_peer.py'),
      '--flavor',
      o.flavor,
      '--batch',
      String(o.batch),
      '--seq',
      String(o.seq),
      '--steps',
      String(o.torchSteps),
      '--warmup',
      '1',
      '--threads',
      String(o.threads),
    ],
    { encoding: 'utf8', env: { ...env, OPENBLAS_NUM_THREADS: String(o.threads) }, timeout: 170_000 },
  );
  if (r.status !== 0)
    return {
      peer: null,
      note: `torch peer failed (status ${r.status}): ${(r.stderr || r.error?.message || '').trim().split('\n').slice(-3).join(' | ')}`,
    };
  const line = r.stdout.trim().split('\n').at(-1)!;
  const peer = JSON.parse(line) as TorchPeer;
  return {
    peer,
    note: `torch peer: torch ${peer.torch}, ${peer.threads} intra-op threads, OPENBLAS_NUM_THREADS=${o.threads}, OPENBLAS_CORETYPE=${env.OPENBLAS_CORETYPE ?? '(unset)'}, OPENBLAS_THREAD_TIMEOUT=${env.OPENBLAS_THREAD_TIMEOUT ?? '(unset)'}, ${peer.steps} timed steps after 1 warm-up, step ${peer.step_s_min.toFixed(2)}–${peer.step_s_max.toFixed(2)} s`,
  };
}

export async function run(argv: string[]): Promise<void> {
  const o = parseArgs(argv);
  const loadStart = loadNote('at start');
  const userEnv = { ...process.env };
  const { getKernels } = await import('../../src/tensor/kernels.ts');
  const k = getKernels();
  k.setNumThreads(o.threads);
  const info = k.blasInfo();
  const notes: string[] = [loadStart];
  for (const key of ['OPENBLAS_CORETYPE', 'OPENBLAS_THREAD_TIMEOUT', 'OMP_WAIT_POLICY'] as const) {
    if (userEnv[key] !== process.env[key])
      notes.push(
        `environment: the kernels loader set ${key}=${process.env[key]} for this process (was ${userEnv[key] ?? 'unset'})`,
      );
  }

  const cfg = resolveModelConfig({ name: 'llama4', flavor: o.flavor }, o.seq);
  const spec = buildModelSpec(cfg);
  const fpt = flopsPerToken(spec, o.seq);
  const counts = countParams(spec);
  // Three trainings of the same model in one sitting, their steps interleaved (a load change hits all three):
  // today's path (every matmul on OpenBLAS, fp32), fp32 on the library the auto rule chooses per shape class, and
  // bf16 mixed precision. Each has its own model and optimizer, built from the same seed.
  const runs = (
    [
      { name: 'openblas_fp32', lib: 'blas', dtype: 'float32' },
      { name: 'fp32', lib: 'auto', dtype: 'float32' },
      { name: 'bf16', lib: 'auto', dtype: 'bfloat16' },
    ] as const
  ).map((r) => {
    const model = Model.build(cfg, { seed: 0, kernels: kernelsFor(k, r.dtype) });
    const trainer = new SingleRankTrainer(model, {
      adamw: { lr: 4e-3, beta1: 0.9, beta2: 0.95, eps: 1e-15, weight_decay: 0.1 },
      schedule: { totalSteps: 100_000, warmupSteps: 2, decayRatio: 0.8, decayType: 'linear', minLrFactor: 0.1 },
      maxNorm: 1,
      ac: parseAcMode('none'),
    });
    return {
      ...r,
      model,
      trainer,
      stepMs: [] as number[],
      phases: { zero: [] as number[], fwd: [] as number[], bwd: [] as number[], optim: [] as number[] },
      lastLoss: NaN,
    };
  });
  const data = batches(4, o.batch, o.seq, spec.vocabSize);
  const tokensPerStep = o.batch * o.seq;

  for (const r of runs) {
    k.setMatmulLibrary(r.lib);
    for (let i = 0; i < o.warmup; i++) r.trainer.step([data[i % data.length]!]);
    r.model.alloc.resetPeak();
  }
  k.setMatmulLibrary('auto');
  measureSgemmPeak(k, { n: PEAK_N, threads: o.threads, budgetMs: 100 }); // warm the square-matmul paths too
  measureSgemmPeak(k, { n: PEAK_N, threads: o.threads, budgetMs: 100, dtype: 'bfloat16' });
  const peaks = { openblas: [] as number[], fp32: [] as number[], bf16: [] as number[] };
  for (let i = 0; i < o.reps; i++) {
    for (let j = 0; j < runs.length; j++) {
      const r = runs[(i + j) % runs.length]!;
      k.setMatmulLibrary(r.lib);
      const t0 = performance.now();
      const res = r.trainer.step([data[(o.warmup + i) % data.length]!]);
      r.stepMs.push(performance.now() - t0);
      r.lastLoss = res.loss;
      for (const p of ['zero', 'fwd', 'bwd', 'optim'] as const) r.phases[p].push(res.phaseMs[p]);
    }
    // The peaks sampled between the steps: each run's MFU against its own compute's matmul rate.
    k.setMatmulLibrary('blas');
    peaks.openblas.push(measureSgemmPeak(k, { n: PEAK_N, threads: o.threads, budgetMs: 100 }).gflops);
    k.setMatmulLibrary('auto');
    peaks.fp32.push(measureSgemmPeak(k, { n: PEAK_N, threads: o.threads, budgetMs: 100 }).gflops);
    peaks.bf16.push(measureSgemmPeak(k, { n: PEAK_N, threads: o.threads, budgetMs: 100, dtype: 'bfloat16' }).gflops);
  }
  k.setMatmulLibrary('auto');
  const [blasRun, fp32Run, bf16Run] = runs as unknown as [
    (typeof runs)[number],
    (typeof runs)[number],
    (typeof runs)[number],
  ];
  const tpsOf = (r: (typeof runs)[number]) => tokensPerStep / (median(r.stepMs) / 1000);
  const model = fp32Run.model;
  const mem = model.alloc.stats();
  const stepMs = fp32Run.stepMs;
  const phases = fp32Run.phases;
  const step = median(stepMs);
  const tps = tpsOf(fp32Run);
  const tpsBlas = tpsOf(blasRun);
  const tpsBf16 = tpsOf(bf16Run);
  const peak = median(peaks.fp32);
  const peakBlas = median(peaks.openblas);
  const peakBf16 = median(peaks.bf16);
  const mfu = (tps * fpt) / (peak * 1e9);
  const lastLoss = fp32Run.lastLoss;
  const loadEnd = loadNote('after the Node timing');
  const lib = info.onednn
    ? `oneDNN ${info.onednnVersion} (${info.onednnIsa}) by the per-class rule`
    : `${info.name} (no oneDNN: ${info.onednnStatus ?? ''})`;

  const results: BenchResult[] = [
    {
      name: 'train_tps',
      value: tps,
      unit: 'tokens/s',
      note: `fp32 on ${lib}; median of ${o.reps} steps (step ${range(stepMs, 0)} ms → ${range(
        stepMs.map((m) => tokensPerStep / (m / 1000)),
        0,
      )} tokens/s)`,
    },
    {
      name: 'train_tps_openblas_fp32',
      value: tpsBlas,
      unit: 'tokens/s',
      note: `every matmul on ${info.name} ${info.corename ?? ''} (the path before oneDNN); step ${range(blasRun.stepMs, 0)} ms`,
    },
    {
      name: 'train_tps_bf16',
      value: tpsBf16,
      unit: 'tokens/s',
      note: `mixed_precision_param = bfloat16 (bf16 matmul inputs, f32 accumulation); step ${range(bf16Run.stepMs, 0)} ms`,
    },
    {
      name: 'fp32_speedup',
      value: tps / tpsBlas,
      unit: 'ratio',
      target: 1.4,
      note: 'train_tps / train_tps_openblas_fp32, same sitting, steps interleaved',
    },
    {
      name: 'bf16_speedup',
      value: tpsBf16 / tpsBlas,
      unit: 'ratio',
      target: 2.2,
      note: 'train_tps_bf16 / train_tps_openblas_fp32',
    },
    {
      name: 'sgemm_peak_gflops',
      value: peak,
      unit: 'GFLOP/s',
      note: `fp32 matmul peak of the chosen library: median of ${peaks.fp32.length} samples between the steps (${range(peaks.fp32, 0)}); N=${PEAK_N}, best of a 100 ms burst, ${o.threads} threads`,
    },
    {
      name: 'sgemm_peak_openblas_gflops',
      value: peakBlas,
      unit: 'GFLOP/s',
      note: `${info.corename ?? info.name}; ${range(peaks.openblas, 0)}`,
    },
    {
      name: 'bf16_peak_gflops',
      value: peakBf16,
      unit: 'GFLOP/s',
      note: `oneDNN bf16 matmul (inputs pre-rounded), ${range(peaks.bf16, 0)}`,
    },
    {
      name: 'mfu',
      value: mfu,
      unit: 'fraction',
      target: 0.45,
      note: `fp32 against the fp32 peak of the same library; ${(fpt / 1e6).toFixed(2)} MFLOP/token (seq ${o.seq})`,
    },
    {
      name: 'mfu_openblas_fp32',
      value: (tpsBlas * fpt) / (peakBlas * 1e9),
      unit: 'fraction',
      note: 'the OpenBLAS run against the OpenBLAS sgemm peak (the MFU reported before oneDNN)',
    },
    {
      name: 'mfu_bf16',
      value: (tpsBf16 * fpt) / (peakBf16 * 1e9),
      unit: 'fraction',
      target: 0.55,
      note: 'the bf16 run against the same-run bf16 matmul peak',
    },
    { name: 'step_ms', value: step, unit: 'ms' },
    { name: 'fwd_ms', value: median(phases.fwd), unit: 'ms', note: range(phases.fwd) },
    { name: 'bwd_ms', value: median(phases.bwd), unit: 'ms', note: range(phases.bwd) },
    {
      name: 'optim_ms',
      value: median(phases.optim),
      unit: 'ms',
      note: `clip + expert bias + AdamW + scheduler; ${range(phases.optim)}`,
    },
    { name: 'zero_grad_ms', value: median(phases.zero), unit: 'ms' },
    { name: 'bf16_fwd_ms', value: median(bf16Run.phases.fwd), unit: 'ms', note: range(bf16Run.phases.fwd) },
    { name: 'bf16_bwd_ms', value: median(bf16Run.phases.bwd), unit: 'ms', note: range(bf16Run.phases.bwd) },
    {
      name: 'peak_memory_bytes',
      value: mem.peakTotal,
      unit: 'B',
      note: Object.entries(mem.peak)
        .filter(([, v]) => v > 0)
        .map(([c, v]) => `${c} ${(v / 2 ** 20).toFixed(1)} MiB`)
        .join(', '),
    },
    {
      name: 'reserved_memory_bytes',
      value: model.rt.pool.reservedBytes,
      unit: 'B',
      note: 'idle pooled activation buffers after the step',
    },
    { name: 'rss_bytes', value: process.memoryUsage().rss, unit: 'B', note: 'whole Node process (three models)' },
  ];
  notes.push(loadEnd);

  if (o.torch) {
    const { peer, note } = runTorchPeer(o, process.env);
    notes.push(note);
    if (peer) {
      const ptps = peer.tokens_per_step / peer.step_s_median;
      results.push(
        {
          name: 'torch_peer_train_tps',
          value: ptps,
          unit: 'tokens/s',
          note: `Debian torch ${peer.torch}, same model/batch (scripts/bench/torch_peer.py)`,
        },
        {
          name: 'torch_peer_mfu',
          value: (ptps * fpt) / (peak * 1e9),
          unit: 'fraction',
          note: "against this run's sgemm peak",
        },
        { name: 'train_tps_vs_torch_peer', value: tps / ptps, unit: 'ratio' },
      );
      notes.push(loadNote('after the torch peer'));
    }
  } else notes.push('torch peer skipped (--no-torch)');

  writeReport({
    bench: 'model',
    when: new Date().toISOString(),
    machine: machineInfo(`${info.name} ${info.corename ?? ''} (${info.coretypeSource ?? ''})`.trim()),
    config: {
      flavor: o.flavor,
      batch: o.batch,
      seq_len: o.seq,
      threads: o.threads,
      ac: 'none',
      reps: o.reps,
      warmup: o.warmup,
      params_total: counts.total,
      params_active: counts.active,
      flops_per_token: fpt,
      last_loss: lastLoss,
    },
    results,
    notes,
  });
}
