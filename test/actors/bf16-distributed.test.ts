// bf16 mixed precision through the distributed runtime (inproc, FSDP 2 + EP 2, every dispatch strategy): parameters
// all-gathered as bf16, EP rows moved as bf16, gradients reduce-scattered in f32. Against the PyTorch reference's
// bf16 mode on its own batch (loss within 2e-2, every gradient's cosine ≥ 0.999), and against the same job on one
// rank (whose all_gather of size 1 rounds the parameters the same way): the strategies differ from it only by the
// bf16 rounding of rows on the wire and by reduction order.
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { getF32, getInt32, readSafetensors } from '../../src/models/safetensors.ts';
import type { RankJob } from '../../src/actors/rank-host.ts';
import type { DistributedRunArgs, DistributedRunResult } from '../../src/actors/programs/distributed-run.ts';
import type { MoeStrategy } from '../../src/protocols/strategies.ts';
import type { ParallelDegrees } from '../../src/comm/mesh-layout.ts';
import { cosine, distributedCaseOf, launchDistributedRun } from '../models/fixtures.ts';

const FIX = fileURLToPath(new URL('../fixtures/parity/', import.meta.url));

async function gradRun(
  fixture: string,
  ranks: number,
  degrees: Partial<ParallelDegrees>,
  dispatch: MoeStrategy,
  reduceDtype: 'float32' | 'bfloat16' = 'float32',
): Promise<DistributedRunResult> {
  const c = distributedCaseOf(fixture);
  const fb = readSafetensors(`${FIX}${fixture}/batch.safetensors`);
  const [B, S] = fb.get('tokens')!.shape as number[];
  const job: RankJob = {
    model: c.model,
    degrees,
    dispatch,
    gradReduce: 'sum',
    divideFactor: 1,
    reshard: 'default',
    ac: { mode: 'none' },
    adamw: c.adamw,
    schedule: c.schedule,
    maxNorm: c.maxNorm,
    seed: 0,
    weights: c.weights,
    paramDtype: 'bfloat16',
    reduceDtype,
  };
  const args: DistributedRunArgs = {
    job,
    tokens: getInt32(fb, 'tokens'),
    labels: getInt32(fb, 'labels'),
    B: B!,
    S: S!,
    microbatches: 1,
    mode: 'grad',
    steps: 1,
  };
  return (await launchDistributedRun(args, ranks, 'distributed run failed'))[0]!;
}

for (const fixture of ['llama4_shared2_train', 'dsv3_groups_softmax_train']) {
  describe(`bf16 distributed: ${fixture}`, () => {
    it('FSDP 2 + EP 2, every strategy: the bf16 reference within 2e-2 / cosine 0.999, one rank within 1e-3 / cosine 0.9999', async () => {
      const exp = readSafetensors(`${FIX}${fixture}/expected_bf16.safetensors`);
      const refLoss = getF32(exp, 'loss')[0]!;
      const one = await gradRun(fixture, 1, { dp_shard: 1, ep: 1 }, 'local');
      expect(Math.abs(one.losses[0]! - refLoss) / refLoss).toBeLessThan(2e-2);
      for (const dispatch of ['a2a', 'allgather-padded', 'allgather-rs'] as const) {
        const d = await gradRun(fixture, 2, { dp_shard: 2, ep: 2 }, dispatch);
        expect(Math.abs(d.losses[0]! - refLoss) / refLoss, `${dispatch} loss vs reference`).toBeLessThan(2e-2);
        expect(Math.abs(d.losses[0]! - one.losses[0]!) / one.losses[0]!, `${dispatch} loss vs one rank`).toBeLessThan(
          1e-3,
        );
        for (const [name, t] of Object.entries(d.tensors!)) {
          expect(
            cosine(t.data, getF32(exp, `grad.${name}`)),
            `${dispatch} ${name} vs reference`,
          ).toBeGreaterThanOrEqual(0.999);
          expect(cosine(t.data, one.tensors![name]!.data), `${dispatch} ${name} vs one rank`).toBeGreaterThanOrEqual(
            0.9999,
          );
        }
      }
    });

    it('mixed_precision_reduce = "bfloat16" (FSDP 2 + EP 2, a2a): gradients within bf16 rounding of the f32-reduced ones', async () => {
      const f = await gradRun(fixture, 2, { dp_shard: 2, ep: 2 }, 'a2a');
      const b = await gradRun(fixture, 2, { dp_shard: 2, ep: 2 }, 'a2a', 'bfloat16');
      expect(b.losses[0]).toBe(f.losses[0]);
      let differ = 0;
      for (const [name, t] of Object.entries(b.tensors!)) {
        const want = f.tensors![name]!.data;
        expect(cosine(t.data, want), name).toBeGreaterThanOrEqual(0.9999);
        // Each rank's contribution and the sum are rounded to bf16 (relative 2^-9 each): judged against the tensor's
        // scale (max-abs over max-abs), since an element that cancels between ranks keeps its inputs' absolute error.
        let err = 0;
        let scale = 1e-30;
        for (let i = 0; i < want.length; i++) {
          err = Math.max(err, Math.abs(t.data[i]! - want[i]!));
          scale = Math.max(scale, Math.abs(want[i]!));
          if (t.data[i] !== want[i]) differ++;
        }
        expect(err / scale, name).toBeLessThanOrEqual(2 ** -7);
      }
      expect(differ, 'the reduction ran in bf16').toBeGreaterThan(0);
    });
  });
}
