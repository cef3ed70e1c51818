// Distributed parity: the same weights and global batch through the distributed runtime (inproc transport) and
// through the single-rank model must give the same loss, gradients and — after 3 optimizer steps with clipping
// and the expert-bias update — the same parameters, for every layout, dispatch strategy, AC mode and gradient
// accumulation in the matrix below (1e-5 relative on losses, 1e-4 max|diff|/max|ref| on tensors).
// Gradients are also checked against the independent PyTorch reference where its batch splits across the ranks.
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import type { WorldOptions } from '../../src/comm/launch.ts';
import { Model } from '../../src/models/model/model.ts';
import { SingleRankTrainer } from '../../src/models/model/train-step.ts';
import { loadWeights } from '../../src/models/model/weights.ts';
import type { AcMode } from '../../src/models/model/ac.ts';
import { getF32, getInt32, readSafetensors } from '../../src/models/safetensors.ts';
import type { RankJob } from '../../src/actors/rank-host.ts';
import type { DistributedRunArgs, DistributedRunResult } from '../../src/actors/programs/distributed-run.ts';
import type { GradReduce } from '../../src/protocols/fsdp-unit.machine.ts';
import type { MoeStrategy } from '../../src/protocols/strategies.ts';
import { getKernels } from '../../src/tensor/kernels.ts';
import {
  AC_FULL as FULL,
  AC_NONE as NONE,
  AC_SEL as SEL,
  distributedCaseOf,
  launchDistributedRun,
  PARITY_LAYOUTS as LAYOUTS,
  relMaxDiff,
  syntheticBatch,
  type DistributedCase,
  type ParityLayout,
} from '../models/fixtures.ts';

const FIX = fileURLToPath(new URL('../fixtures/parity/', import.meta.url));

async function runDistributed(
  c: DistributedCase,
  layout: ParityLayout,
  opts: {
    dispatch: MoeStrategy;
    ac: AcMode;
    ga: number;
    mode: 'grad' | 'train';
    batch: { tokens: Int32Array; labels: Int32Array; B: number; S: number };
    gradReduce?: GradReduce;
    divideFactor?: number;
    world?: Partial<WorldOptions>;
  },
): Promise<DistributedRunResult> {
  const job: RankJob = {
    model: c.model,
    degrees: layout.degrees,
    dispatch: opts.dispatch,
    gradReduce: opts.gradReduce ?? 'sum',
    divideFactor: opts.divideFactor ?? 1,
    reshard: 'default',
    ac: opts.ac,
    adamw: c.adamw,
    schedule: c.schedule,
    maxNorm: c.maxNorm,
    seed: 0,
    weights: c.weights,
  };
  const args: DistributedRunArgs = { job, ...opts.batch, microbatches: opts.ga, mode: opts.mode, steps: 3 };
  return (await launchDistributedRun(args, layout.ranks, 'distributed run failed', opts.world))[0]!;
}

/** The single-rank run of the same batch: loss/grad or 3 steps. */
function runSingle(
  c: DistributedCase,
  ac: AcMode,
  batch: { tokens: Int32Array; labels: Int32Array; B: number; S: number },
) {
  const model = Model.build(c.model, { kernels: getKernels() });
  loadWeights(model, readSafetensors(c.weights));
  const fwd = model.forward({ ...batch }, { ac });
  model.backward();
  const grads = new Map(model.paramNames().map((n) => [n, Float32Array.from(model.grad(n))]));
  const trainer = new SingleRankTrainer(Model.build(c.model, { kernels: getKernels() }), {
    adamw: c.adamw,
    schedule: c.schedule,
    maxNorm: c.maxNorm,
    ac,
  });
  loadWeights(trainer.model, readSafetensors(c.weights));
  const steps = [0, 1, 2].map(() => trainer.step([{ ...batch }]));
  const params = new Map(trainer.model.paramNames().map((n) => [n, Float32Array.from(trainer.model.param(n))]));
  for (const m of trainer.model.moeLayers())
    params.set(`layers.${m.layerId}.moe.expert_bias`, Float32Array.from(m.buffers.expertBias ?? []));
  return { loss: fwd.loss, grads, steps, params };
}

// A covering design rather than the full product: every layout with every strategy it admits, every AC mode and
// both accumulation settings with every strategy, on both model families.
const MATRIX: { layout: string; dispatch: MoeStrategy; ac: AcMode; ga: number }[] = [
  { layout: 'fsdp2', dispatch: 'a2a', ac: NONE, ga: 1 },
  { layout: 'hsdp2x1', dispatch: 'a2a', ac: SEL, ga: 2 },
  { layout: 'fsdp4', dispatch: 'a2a', ac: FULL, ga: 2 },
  { layout: 'fsdp2-ep2', dispatch: 'a2a', ac: SEL, ga: 1 },
  { layout: 'fsdp2-ep2', dispatch: 'allgather-padded', ac: FULL, ga: 2 },
  { layout: 'fsdp2-ep2', dispatch: 'allgather-rs', ac: NONE, ga: 2 },
  { layout: 'fsdp4-ep2', dispatch: 'a2a', ac: FULL, ga: 2 },
  { layout: 'fsdp4-ep2', dispatch: 'allgather-padded', ac: NONE, ga: 1 },
  { layout: 'fsdp4-ep2', dispatch: 'allgather-rs', ac: SEL, ga: 2 },
  { layout: 'fsdp4-ep4', dispatch: 'a2a', ac: NONE, ga: 2 },
  { layout: 'fsdp4-ep4', dispatch: 'allgather-padded', ac: SEL, ga: 1 },
  { layout: 'fsdp4-ep4', dispatch: 'allgather-rs', ac: FULL, ga: 1 },
  { layout: 'hsdp2x2-ep2', dispatch: 'a2a', ac: SEL, ga: 1 },
  { layout: 'hsdp2x2-ep2', dispatch: 'allgather-padded', ac: NONE, ga: 2 },
  { layout: 'hsdp2x2-ep2', dispatch: 'allgather-rs', ac: FULL, ga: 2 },
];

const acName = (ac: AcMode) =>
  ac.mode === 'selective' ? ('every' in ac ? `selective-${ac.every}` : 'selective-op') : ac.mode;

for (const fixture of ['llama4_shared2_train', 'dsv3_groups_softmax_train']) {
  describe(`distributed parity: ${fixture}`, () => {
    const c = distributedCaseOf(fixture);
    const S = c.model.name === 'llama4' ? 16 : 16;
    const B = 8;
    const V = c.model.args.vocab_size;
    const batch = { ...syntheticBatch(V, B, S, 11), B, S };
    const singles = new Map<string, ReturnType<typeof runSingle>>();
    const single = (ac: AcMode) => {
      const k = acName(ac);
      if (!singles.has(k)) singles.set(k, runSingle(c, ac, batch));
      return singles.get(k)!;
    };

    for (const m of MATRIX) {
      it(`${m.layout} ${m.dispatch} AC ${acName(m.ac)} GA ${m.ga}: 3 steps match one rank`, async () => {
        const ref = single(m.ac);
        const d = await runDistributed(c, LAYOUTS[m.layout]!, {
          dispatch: m.dispatch,
          ac: m.ac,
          ga: m.ga,
          mode: 'train',
          batch,
        });
        for (let s = 0; s < 3; s++) {
          expect(Math.abs(d.losses[s]! - ref.steps[s]!.loss) / ref.steps[s]!.loss).toBeLessThan(1e-5);
          expect(Math.abs(d.gradNorms[s]! - ref.steps[s]!.gradNorm) / ref.steps[s]!.gradNorm).toBeLessThan(1e-4);
          expect(d.lrs[s]).toBeCloseTo(ref.steps[s]!.lr, 12);
        }
        for (const [name, want] of ref.params) {
          const got = d.tensors![name];
          expect(got, name).toBeDefined();
          expect(relMaxDiff(got!.data, want), name).toBeLessThan(1e-4);
        }
      });
    }

    it('gradients of one forward/backward match one rank (fsdp4-ep4, a2a)', async () => {
      const ref = single(NONE);
      const d = await runDistributed(c, LAYOUTS['fsdp4-ep4']!, {
        dispatch: 'a2a',
        ac: NONE,
        ga: 1,
        mode: 'grad',
        batch,
      });
      expect(Math.abs(d.losses[0]! - ref.loss) / ref.loss).toBeLessThan(1e-5);
      for (const [name, want] of ref.grads) expect(relMaxDiff(d.tensors![name]!.data, want), name).toBeLessThan(1e-4);
    });

    it('SUM-then-divide and PREMUL_SUM reductions give the same gradients as plain SUM', async () => {
      const ref = single(NONE);
      for (const gradReduce of ['sum-divide', 'premul-sum'] as const) {
        const d = await runDistributed(c, LAYOUTS['hsdp2x2-ep2']!, {
          dispatch: 'allgather-rs',
          ac: NONE,
          ga: 1,
          mode: 'grad',
          batch,
          gradReduce,
          divideFactor: 4,
        });
        for (const [name, want] of ref.grads)
          expect(relMaxDiff(d.tensors![name]!.data, want), `${gradReduce} ${name}`).toBeLessThan(1e-4);
      }
    });

    it('matches the PyTorch reference gradients on its own batch (2 ranks, EP 2, every strategy)', async () => {
      const fb = readSafetensors(`${FIX}${fixture}/batch.safetensors`);
      const [fB, fS] = fb.get('tokens')!.shape as number[];
      const exp = readSafetensors(`${FIX}${fixture}/expected.safetensors`);
      for (const dispatch of ['a2a', 'allgather-padded', 'allgather-rs'] as const) {
        const d = await runDistributed(c, LAYOUTS['fsdp2-ep2']!, {
          dispatch,
          ac: NONE,
          ga: 1,
          mode: 'grad',
          batch: { tokens: getInt32(fb, 'tokens'), labels: getInt32(fb, 'labels'), B: fB!, S: fS! },
        });
        const loss = getF32(exp, 'loss')[0]!;
        expect(Math.abs(d.losses[0]! - loss) / Math.abs(loss)).toBeLessThan(1e-5);
        for (const [name, t] of Object.entries(d.tensors!))
          expect(relMaxDiff(t.data, getF32(exp, `grad.${name}`)), `${dispatch} ${name}`).toBeLessThan(1e-4);
      }
    });
  });
}
