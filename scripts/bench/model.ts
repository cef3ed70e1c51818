// `npm run bench:model [-- --reps N --warmup N --threads N --batch B --seq S --flavor F --no-torch
// --onednn-wait auto|passive|spin]`: one rank
// training torchtitan's Llama4 debugmodel (batch 4 × seq 512, 2 BLAS threads by default) with SingleRankTrainer —
// zero grads → forward → backward → clip → expert-bias update → AdamW — against the machine's own limit.
//
// Three trainings of the model run in one sitting, each in its own child process (scripts/bench/model-child.ts)
// with the environment its path uses at run time, their steps interleaved (one step of each per round, order
// rotating, never two at once): every matmul on OpenBLAS in fp32 (the path before oneDNN: MOE_ACTORS_MATMUL=blas,
// OpenMP passive), fp32 on the per-shape-class library (oneDNN where built in), and bf16 mixed precision
// (mixed_precision_param = bfloat16); the oneDNN paths get the OpenMP wait policy a one-rank job of --threads
// threads would get on this node now (src/tensor/omp-wait.ts). Separate processes keep one path's OpenMP or
// OpenBLAS threads from spinning on the cores another path's step needs.
//
//   train_tps           tokens per second of the full step, fp32 on the chosen library (median over --reps steps
//                       after --warmup steps); train_tps_openblas_fp32 and train_tps_bf16 the same for the others
//   fp32_speedup        train_tps / train_tps_openblas_fp32; bf16_speedup = train_tps_bf16 / train_tps_openblas_fp32
//   mfu_bf16            the bf16 run against the bf16 matmul peak (gemmBf16, N = 1024, sampled like the fp32 one)
//   sgemm_peak_gflops   the MFU denominator, measured in this run in the same process and settings as the fp32
//                       steps (the OpenBLAS and bf16 peaks likewise in theirs): after every timed step, measureSgemmPeak with square sgemms of N = 1024 (as bench:kernels; the rate plateaus
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
// Environment: each child's kernels loader sets OPENBLAS_CORETYPE (from the ISA, unless set); the OpenMP wait
// policy per path is decided here (a user's OMP_WAIT_POLICY/GOMP_SPINCOUNT applies to all three); the notes list
// every path's environment.
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { hasAvx512Core } from '../../src/tensor/cpu-features.ts';
import { nodeBusy } from '../../src/tensor/node-busy.ts';
import { join } from 'node:path';
import { resolveModelConfig } from '../../src/models/config.ts';
import { countParams, flopsPerToken } from '../../src/models/counts.ts';
import { buildModelSpec } from '../../src/models/spec.ts';
import { addonLinksOnednn } from '../../src/tensor/kernels.ts';
import { OMP_SPIN_COUNT, chooseOmpWait, type OmpWaitChoice } from '../../src/tensor/omp-wait.ts';
import { ROOT, loadNote, machineInfo, median, range, writeReport, type BenchResult } from './common.ts';
import type { ChildSpec, FromChild, ToChild } from './model-child.ts';

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
  /** The oneDNN paths' OpenMP wait: as a job would choose (auto), or forced, for an A/B on one node. */
  onednnWait: 'auto' | 'passive' | 'spin';
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
    onednnWait: 'auto',
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
    else if (a === '--onednn-wait') {
      const v = argv[++i];
      if (v !== 'auto' && v !== 'passive' && v !== 'spin')
        throw new Error(`bench:model: --onednn-wait takes auto, passive or spin, not ${v}`);
      o.onednnWait = v;
    } else throw new Error(`bench:model: unknown argument ${a}`);
  }
  return o;
}

/** One training path in its own process; every wait on it has a timeout naming the path and what was awaited. */
class PathProcess {
  private readonly child: ChildProcess;
  private pending: { resolve: (m: FromChild) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | null = null;
  private stderr = '';

  constructor(
    readonly name: string,
    spec: ChildSpec,
    readonly env: NodeJS.ProcessEnv,
  ) {
    this.child = fork(join(ROOT, 'scripts', 'bench', 'model-child.ts'), ['--bench-model-child', JSON.stringify(spec)], {
      env,
      execArgv: ['--import', import.meta.resolve('tsx')], // from any cwd
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    this.child.on('message', (m: FromChild) => {
      const p = this.pending;
      if (!p) return;
      this.pending = null;
      clearTimeout(p.timer);
      if (m.type === 'error') p.reject(new Error(`bench:model: the ${this.name} path failed:\n${m.message}`));
      else p.resolve(m);
    });
    this.child.on('exit', (code, signal) => {
      const p = this.pending;
      if (!p) return;
      this.pending = null;
      clearTimeout(p.timer);
      p.reject(
        new Error(
          `bench:model: the ${this.name} path's process exited (${signal ?? code}) while bench:model waited for it:\n${this.stderr}`,
        ),
      );
    });
  }

  /** The next message from the child (after sending `msg`, if given), or an error after `timeoutMs`. */
  next(what: string, timeoutMs: number, msg?: ToChild): Promise<FromChild> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = null;
        reject(
          new Error(
            `bench:model waited ${timeoutMs / 1000} s for the ${this.name} path's process (${what}) in vain; it is killed. stderr:\n${this.stderr}`,
          ),
        );
        this.child.kill();
      }, timeoutMs);
      this.pending = { resolve, reject, timer };
      if (msg) this.child.send(msg);
    });
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill();
  }
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
  const notes: string[] = [loadStart];
  const cfg = resolveModelConfig({ name: 'llama4', flavor: o.flavor }, o.seq);
  const spec = buildModelSpec(cfg);
  const fpt = flopsPerToken(spec, o.seq);
  const counts = countParams(spec);
  // The wait policy each path gets when a one-rank job of --threads threads starts on this node now: the OpenBLAS
  // path stays passive (its threads are what spinning starves); the oneDNN paths spin only on an idle node.
  const decide = (matmul: string): OmpWaitChoice => {
    if (matmul !== 'blas' && o.onednnWait === 'passive')
      return { mode: 'passive', set: { OMP_WAIT_POLICY: 'passive' }, line: 'OpenMP wait passive (--onednn-wait)' };
    if (matmul !== 'blas' && o.onednnWait === 'spin')
      return {
        mode: 'spin',
        set: { GOMP_SPINCOUNT: String(OMP_SPIN_COUNT) },
        line: `OpenMP wait: spin ${OMP_SPIN_COUNT} (--onednn-wait)`,
      };
    return chooseOmpWait({
      env: { ...process.env, MOE_ACTORS_MATMUL: matmul },
      onednnBuilt: addonLinksOnednn(),
      avx512: hasAvx512Core(),
      computeThreads: o.threads,
      cores: availableParallelism(),
      busy: () => nodeBusy(),
    });
  };
  const paths = [
    { name: 'openblas_fp32', dtype: 'float32', matmul: 'blas' },
    { name: 'fp32', dtype: 'float32', matmul: process.env.MOE_ACTORS_MATMUL ?? 'auto' },
    { name: 'bf16', dtype: 'bfloat16', matmul: process.env.MOE_ACTORS_MATMUL ?? 'auto' },
  ] as const;
  const procs: PathProcess[] = [];
  const runs = paths.map((p) => ({
    ...p,
    wait: decide(p.matmul),
    stepMs: [] as number[],
    phases: { zero: [] as number[], fwd: [] as number[], bwd: [] as number[], optim: [] as number[] },
    peaks: [] as number[],
    lastLoss: NaN,
    info: undefined as (FromChild & { type: 'ready' })['info'] | undefined,
    env: {} as Record<string, string>,
    end: undefined as (FromChild & { type: 'finished' }) | undefined,
  }));
  const stepTimeout = 600_000;
  try {
    // One after another, so warm-up (model build, first steps, primitive creation) never overlaps another path.
    for (const r of runs) {
      const env: NodeJS.ProcessEnv = { ...process.env, MOE_ACTORS_MATMUL: r.matmul, ...r.wait.set };
      const p = new PathProcess(
        r.name,
        {
          name: r.name,
          dtype: r.dtype,
          threads: o.threads,
          batch: o.batch,
          seq: o.seq,
          flavor: o.flavor,
          warmup: o.warmup,
        },
        env,
      );
      procs.push(p);
      const ready = await p.next('model build and warm-up', stepTimeout);
      if (ready.type !== 'ready') throw new Error(`bench:model: the ${r.name} path sent ${ready.type} before ready`);
      r.info = ready.info;
      r.env = ready.env;
      notes.push(
        `${r.name} path (own process): ${Object.entries(ready.env)
          .map(([key, v]) => `${key}=${v}`)
          .join(' ')}; ${r.wait.line}`,
      );
    }
    for (let i = 0; i < o.reps; i++) {
      for (let j = 0; j < runs.length; j++) {
        const idx = (i + j) % runs.length;
        const r = runs[idx]!;
        const m = await procs[idx]!.next(`step ${i + 1}`, stepTimeout, { type: 'step', index: i });
        if (m.type !== 'stepped') throw new Error(`bench:model: the ${r.name} path sent ${m.type}, not a step`);
        r.stepMs.push(m.ms);
        r.lastLoss = m.loss;
        r.peaks.push(m.peakGflops);
        for (const ph of ['zero', 'fwd', 'bwd', 'optim'] as const) r.phases[ph].push(m.phases[ph]);
      }
    }
    for (let idx = 0; idx < runs.length; idx++) {
      const m = await procs[idx]!.next('final memory figures', 60_000, { type: 'finish' });
      if (m.type !== 'finished') throw new Error(`bench:model: the ${runs[idx]!.name} path sent ${m.type}`);
      runs[idx]!.end = m;
    }
  } finally {
    for (const p of procs) p.kill();
  }
  const [blasRun, fp32Run, bf16Run] = runs as unknown as [
    (typeof runs)[number],
    (typeof runs)[number],
    (typeof runs)[number],
  ];
  const tokensPerStep = o.batch * o.seq;
  const tpsOf = (r: (typeof runs)[number]) => tokensPerStep / (median(r.stepMs) / 1000);
  const info = fp32Run.info!;
  const blasInfo = blasRun.info!;
  const mem = fp32Run.end!;
  const stepMs = fp32Run.stepMs;
  const phases = fp32Run.phases;
  const step = median(stepMs);
  const tps = tpsOf(fp32Run);
  const tpsBlas = tpsOf(blasRun);
  const tpsBf16 = tpsOf(bf16Run);
  const peaks = { fp32: fp32Run.peaks, openblas: blasRun.peaks, bf16: bf16Run.peaks };
  const peak = median(peaks.fp32);
  const peakBlas = median(peaks.openblas);
  const peakBf16 = median(peaks.bf16);
  const mfu = (tps * fpt) / (peak * 1e9);
  const lastLoss = fp32Run.lastLoss;
  const loadEnd = loadNote('after the Node timing');
  const lib = !info.onednn
    ? `${info.name} (no oneDNN: ${info.onednnStatus ?? ''})`
    : info.f32Matmuls === 'blas'
      ? `${info.name} by the auto rule (oneDNN ${info.onednnVersion} runs ${info.onednnIsa} here, not AVX-512: not faster)`
      : `oneDNN ${info.onednnVersion} (${info.onednnIsa}) by the auto rule`;

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
      note: `every matmul on ${blasInfo.name} ${blasInfo.corename ?? ''} (the path before oneDNN), own process; step ${range(blasRun.stepMs, 0)} ms`,
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
      note: 'train_tps / train_tps_openblas_fp32, same sitting, steps interleaved, each path in its own process',
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
      note: `${blasInfo.corename ?? blasInfo.name}, sampled in the OpenBLAS path's process; ${range(peaks.openblas, 0)}`,
    },
    {
      name: 'bf16_peak_gflops',
      value: peakBf16,
      unit: 'GFLOP/s',
      note: `oneDNN bf16 matmul (inputs pre-rounded), sampled in the bf16 path's process; ${range(peaks.bf16, 0)}`,
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
      note: Object.entries(mem.peakByCategory)
        .filter(([, v]) => v > 0)
        .map(([c, v]) => `${c} ${(v / 2 ** 20).toFixed(1)} MiB`)
        .join(', '),
    },
    {
      name: 'reserved_memory_bytes',
      value: mem.reserved,
      unit: 'B',
      note: 'idle pooled activation buffers after the step',
    },
    { name: 'rss_bytes', value: mem.rss, unit: 'B', note: "the fp32 path's Node process (one model)" },
  ];
  notes.push(loadEnd);

  if (o.torch) {
    // The torch peer gets the OpenBLAS settings the OpenBLAS path ran with (its loader chose the core type).
    const { peer, note } = runTorchPeer(o, { ...process.env, ...blasRun.env });
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
    machine: machineInfo(`${blasInfo.name} ${blasInfo.corename ?? ''} (${blasInfo.coretypeSource ?? ''})`.trim(), {
      ...process.env,
      ...blasRun.env,
    }),
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
