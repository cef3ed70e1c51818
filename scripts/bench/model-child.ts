// One training path of bench:model in its own process (started by scripts/bench/model.ts, not a bench of its own):
// its matmul library and OpenMP wait policy come from the environment the parent gives it, exactly as a training
// on that path would load them, so no path's threads share a process with (or starve) another's. It trains the
// debugmodel one step per "step" message and samples the matmul peak of its own compute right after each step.
import { countParams } from '../../src/models/counts.ts';
import { syntheticBatch } from './ep-rank.ts';
import { resolveModelConfig } from '../../src/models/config.ts';
import { parseAcMode } from '../../src/models/model/ac.ts';
import { Model, type Microbatch } from '../../src/models/model/model.ts';
import { SingleRankTrainer } from '../../src/models/model/train-step.ts';
import { buildModelSpec } from '../../src/models/spec.ts';
import { measureSgemmPeak } from '../../src/train/metrics/peak.ts';
import { getKernels } from '../../src/tensor/kernels.ts';
import { kernelsFor } from '../../src/tensor/precision.ts';
import { BENCH_OPTIMIZER } from './common.ts';

export const PEAK_N = 1024;

export interface ChildSpec {
  name: string;
  dtype: 'float32' | 'bfloat16';
  threads: number;
  batch: number;
  seq: number;
  flavor: string;
  warmup: number;
}

export type ToChild = { type: 'step'; index: number } | { type: 'finish' };
export type FromChild =
  | { type: 'ready'; info: ReturnType<ReturnType<typeof getKernels>['blasInfo']>; env: Record<string, string> }
  | {
      type: 'stepped';
      ms: number;
      phases: Record<'zero' | 'fwd' | 'bwd' | 'optim', number>;
      loss: number;
      peakGflops: number;
    }
  | {
      type: 'finished';
      peakTotal: number;
      peakByCategory: Record<string, number>;
      reserved: number;
      rss: number;
      params: number;
    }
  | { type: 'error'; message: string };

/** Deterministic batches (a fresh one per step, cycling over `n`), next-token labels: bench:ep's generator. */
function batches(n: number, B: number, S: number, V: number): Microbatch[] {
  return Array.from({ length: n }, (_, b) => ({ ...syntheticBatch(V, B, S, 12345 + b), B, S }));
}

function main(spec: ChildSpec): void {
  const send = (m: FromChild) => process.send!(m);
  const k = getKernels();
  k.setNumThreads(spec.threads);
  const cfg = resolveModelConfig({ name: 'llama4', flavor: spec.flavor }, spec.seq);
  const ms = buildModelSpec(cfg);
  const model = Model.build(cfg, { seed: 0, kernels: kernelsFor(k, spec.dtype) });
  const trainer = new SingleRankTrainer(model, {
    ...BENCH_OPTIMIZER,
    ac: parseAcMode('none'),
  });
  const data = batches(4, spec.batch, spec.seq, ms.vocabSize);
  for (let i = 0; i < spec.warmup; i++) trainer.step([data[i % data.length]!]);
  model.alloc.resetPeak();
  const peakOpts = { n: PEAK_N, threads: spec.threads, budgetMs: 100, dtype: spec.dtype } as const;
  measureSgemmPeak(k, peakOpts); // warm the square-matmul path
  const env: Record<string, string> = {};
  for (const key of [
    'MOE_ACTORS_MATMUL',
    'OMP_WAIT_POLICY',
    'GOMP_SPINCOUNT',
    'OPENBLAS_CORETYPE',
    'OPENBLAS_THREAD_TIMEOUT',
  ])
    if (process.env[key] !== undefined) env[key] = process.env[key]!;
  send({ type: 'ready', info: k.blasInfo(), env });
  process.on('message', (m: ToChild) => {
    try {
      if (m.type === 'step') {
        const t0 = performance.now();
        const res = trainer.step([data[(spec.warmup + m.index) % data.length]!]);
        const stepMs = performance.now() - t0;
        // The peak right after the step: the same process, settings and machine load as the step it is set against.
        const peakGflops = measureSgemmPeak(k, peakOpts).gflops;
        send({ type: 'stepped', ms: stepMs, phases: res.phaseMs, loss: res.loss, peakGflops });
      } else {
        const mem = model.alloc.stats();
        send({
          type: 'finished',
          peakTotal: mem.peakTotal,
          peakByCategory: { ...mem.peak },
          reserved: model.rt.pool.reservedBytes,
          rss: process.memoryUsage().rss,
          params: countParams(ms).total,
        });
        process.disconnect();
      }
    } catch (e) {
      send({ type: 'error', message: (e as Error).stack ?? String(e) });
    }
  });
}

if (process.send && process.argv[2] === '--bench-model-child') {
  try {
    main(JSON.parse(process.argv[3]!) as ChildSpec);
  } catch (e) {
    process.send({ type: 'error', message: (e as Error).stack ?? String(e) } satisfies FromChild);
    process.disconnect();
  }
}

/** bin/bench.mjs imports every scripts/bench/<name>.ts as a bench: this one is only bench:model's child. */
export async function run(): Promise<void> {
  throw new Error('bench:model-child is started by bench:model (one training path per process); run bench:model');
}
