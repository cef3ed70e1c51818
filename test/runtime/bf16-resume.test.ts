// Checkpoints under bf16 mixed precision stay fp32 (master weights and AdamW state): a bf16 run resumed from its
// step-2 checkpoint reproduces the uninterrupted run's steps 3-4 bit for bit, and the same checkpoint resumes in
// fp32 (and an fp32 one in bf16) with the same config hash, the loss within bf16's distance of the other run.
import { afterAll, describe, expect, it } from 'vitest';
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readCheckpoint } from '../../src/train/checkpoint/index.ts';
import { runTraining } from '../../src/train/trainer.ts';
import { captureOutput, TINY, tmpRoot } from './helpers.ts';

const root = tmpRoot('bf16-resume');
afterAll(() => rmSync(root, { recursive: true, force: true }));
const run = async (name: string, dtype: string) => {
  const { value } = await captureOutput(() =>
    runTraining({ config: TINY, transport: 'inproc', quiet: true }, [
      '--job.dump_folder',
      root,
      '--job.run_name',
      name,
      '--training.steps',
      '4',
      '--training.mixed_precision_param',
      dtype,
      '--checkpoint.enable',
      '--checkpoint.interval',
      '2',
      '--trace.enable',
      'false',
    ]),
  );
  return value!.results[0]!;
};
const ckpt = (name: string) => join(root, name, 'checkpoint');

describe('bf16 checkpoints', () => {
  it('stay fp32, resume bit-identically, and move between precisions', { timeout: 120_000 }, async () => {
    const bf = await run('bf16', 'bfloat16');
    const fp = await run('fp32', 'float32');
    expect(bf.steps.map((s) => s.step)).toEqual([1, 2, 3, 4]);
    expect(bf.steps[0]!.loss, 'the bf16 run computed in bf16').not.toBe(fp.steps[0]!.loss);
    const ck = readCheckpoint(join(ckpt('bf16'), 'step-2'));
    for (const s of ck.shards)
      for (const [name, t] of s.tensors)
        if (!name.endsWith('tokens_per_expert')) expect(t.data, name).toBeInstanceOf(Float32Array);
    expect(ck.manifest.configHash).toBe(readCheckpoint(join(ckpt('fp32'), 'step-2')).manifest.configHash);

    // Resume bf16 from its own step 2.
    cpSync(join(ckpt('bf16'), 'step-2'), join(ckpt('bf16-resumed'), 'step-2'), { recursive: true });
    const again = await run('bf16-resumed', 'bfloat16');
    expect(again.resumedFrom).toBe(2);
    expect(again.steps.map((s) => s.loss)).toEqual(bf.steps.slice(2).map((s) => s.loss));
    expect(again.steps.map((s) => s.gradNorm)).toEqual(bf.steps.slice(2).map((s) => s.gradNorm));

    // Across precisions: bf16's step 2 in fp32, fp32's step 2 in bf16.
    for (const [from, to, other] of [
      ['bf16', 'float32', fp],
      ['fp32', 'bfloat16', bf],
    ] as const) {
      const name = `${from}-as-${to}`;
      cpSync(join(ckpt(from), 'step-2'), join(ckpt(name), 'step-2'), { recursive: true });
      const r = await run(name, to);
      expect(r.resumedFrom, name).toBe(2);
      expect(Math.abs(r.steps[0]!.loss - other.steps[2]!.loss) / other.steps[2]!.loss, name).toBeLessThan(2e-2);
    }
  });
});
