// `node bin/bench.mjs model-profile [-- --reps N --dtype bfloat16|float32 --threads N --by-shape]`: where a train
// step of bench:model's debugmodel (batch 4 × 512, one rank) spends its time, per kernel class — the question to
// answer before optimising a precision's step (issue #11: which part of the bf16 step keeps mfu_bf16 low).
//
// Every kernel call of the model goes through a timing view of the kernels (each native call is synchronous, so
// wall time around it is its cost); matmuls are split by transposes (NT forward, NN input gradient, TN weight
// gradient) and by whether their row count is a dense batch·seq (a multiple of 64) or an expert's, with GFLOP/s.
// --by-shape splits the dense matmuls further by M×N×K (how the 16 MB logits' page faults showed: one output-head
// product at 105 GFLOP/s among dense products at 430–580). "outside kernels" is the step's remainder: TypeScript
// control, routing, pool bookkeeping. Prints a table and writes outputs/bench/model-profile.json. Not a timing
// target: bench:model gives the step rates.
import { resolveModelConfig } from '../../src/models/config.ts';
import { parseAcMode } from '../../src/models/model/ac.ts';
import { Model, type Microbatch } from '../../src/models/model/model.ts';
import { SingleRankTrainer } from '../../src/models/model/train-step.ts';
import { buildModelSpec } from '../../src/models/spec.ts';
import type { Kernels } from '../../src/tensor/kernels-api.ts';
import { timingView } from '../../src/tensor/kernel-times.ts';
import { kernelsFor, type ParamDtype } from '../../src/tensor/precision.ts';
import { BENCH_OPTIMIZER, loadNote, machineInfo, type BenchResult, writeReport } from './common.ts';
import { syntheticBatch } from './ep-rank.ts';

interface Tally {
  ms: number;
  calls: number;
  flops: number;
}

/** A view of `k` that adds each call's wall time to `tally` under the call's class. */
function timed(k: Kernels, tally: Map<string, Tally>, byShape: boolean): Kernels {
  return timingView(k, (kernel, ms, g) => {
    let name = kernel;
    if (g) {
      const rows = g.ta ? g.K : g.M;
      name = `matmul ${g.ta ? 'T' : 'N'}${g.tb ? 'T' : 'N'} ${rows % 64 === 0 ? 'dense' : 'expert'} rows`;
      if (byShape && rows % 64 === 0) name += ` ${g.M}×${g.N}×${g.K}`;
    }
    const t = tally.get(name) ?? { ms: 0, calls: 0, flops: 0 };
    t.ms += ms;
    t.calls++;
    t.flops += g ? 2 * g.M * g.N * g.K : 0;
    tally.set(name, t);
  });
}

export async function run(argv: string[]): Promise<void> {
  let reps = 6;
  let dtype: ParamDtype = 'bfloat16';
  let threads = 2;
  let byShape = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--reps') reps = Math.max(1, Number(argv[++i]));
    else if (a === '--by-shape') byShape = true;
    else if (a === '--threads') threads = Math.max(1, Number(argv[++i]));
    else if (a === '--dtype') {
      const d = argv[++i];
      if (d !== 'bfloat16' && d !== 'float32')
        throw new Error(`bench:model-profile: --dtype ${d} is not one of bfloat16, float32`);
      dtype = d;
    } else throw new Error(`bench:model-profile: unknown argument ${a}`);
  }
  const load = loadNote('at start');
  const { getKernels } = await import('../../src/tensor/kernels.ts');
  const k = getKernels();
  k.setNumThreads(threads);
  const cfg = resolveModelConfig({ name: 'llama4', flavor: 'debugmodel' }, 512);
  const spec = buildModelSpec(cfg);
  const tally = new Map<string, Tally>();
  const model = Model.build(cfg, { seed: 0, kernels: timed(kernelsFor(k, dtype), tally, byShape) });
  const trainer = new SingleRankTrainer(model, {
    ...BENCH_OPTIMIZER,
    ac: parseAcMode('none'),
  });
  // bench:model's batches (model-child.ts), so the profile's steps are the ones bench:model times.
  const data: Microbatch[] = [0, 1, 2, 3].map((b) => ({
    ...syntheticBatch(spec.vocabSize, 4, 512, 12345 + b),
    B: 4,
    S: 512,
  }));
  for (let i = 0; i < 3; i++) trainer.step([data[i % data.length]!]);
  tally.clear();
  let stepMs = 0;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    trainer.step([data[i % data.length]!]);
    stepMs += performance.now() - t0;
  }
  const per = (x: number) => x / reps;
  let inKernels = 0;
  const results: BenchResult[] = [
    { name: 'step_ms', value: per(stepMs), unit: 'ms', note: `${dtype}, mean of ${reps}` },
  ];
  for (const [name, t] of [...tally.entries()].sort((a, b) => b[1].ms - a[1].ms)) {
    inKernels += t.ms;
    const rate = t.flops ? `, ${(t.flops / t.ms / 1e6).toFixed(0)} GFLOP/s` : '';
    results.push({
      name,
      value: per(t.ms),
      unit: 'ms/step',
      note: `${((100 * t.ms) / stepMs).toFixed(1)} % of the step, ${per(t.calls).toFixed(0)} calls${rate}`,
    });
  }
  results.push({
    name: 'outside kernels',
    value: per(stepMs - inKernels),
    unit: 'ms/step',
    note: `${((100 * (stepMs - inKernels)) / stepMs).toFixed(1)} %`,
  });
  const report = {
    bench: 'model-profile',
    when: new Date().toISOString(),
    machine: machineInfo(k.blasInfo().name),
    config: { flavor: 'debugmodel', batch: 4, seq: 512, dtype, threads, reps, byShape },
    results,
    notes: [load, loadNote('at the end')],
  };
  writeReport(report);
}
