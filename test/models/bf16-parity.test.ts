// bf16 mixed precision against the PyTorch reference's bf16 mode (scripts/reference/make_bf16_fixtures.py: FSDP2's
// param_dtype bfloat16 on every parameter matmul, fp32 master weights and reduce): loss within 2e-2 relative and
// every gradient with cosine similarity ≥ 0.999 (the contract), router counts equal. bf16 and fp32 agree
// to ~1e-5 in loss on these tiny models, so the contract alone could not tell the modes apart: the test also asserts
// the bf16 path was taken (the loss moves off the fp32 loss) and that it lands nearer the bf16 reference's
// gradients than the fp32 run does, per the sum over tensors of the max-abs error.
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { getF32, getI64, getScalarF32, readSafetensors } from '../../src/models/safetensors.ts';
import { Model } from '../../src/models/model/model.ts';
import { loadWeights } from '../../src/models/model/weights.ts';
import { nativeKernels, refKernels } from '../../src/tensor/kernels.ts';
import { kernelsFor } from '../../src/tensor/precision.ts';
import type { Kernels } from '../../src/tensor/kernels-api.ts';
import { PARITY_DIR, cosine, loadCase } from './fixtures.ts';

const CASES = ['llama4_gqa_ropescale_top1', 'dsv3_mla_yarn_softmax_top3'];

function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function gradPass(name: string, k: Kernels) {
  const c = loadCase(name);
  const model = Model.build(c.config, { kernels: k });
  loadWeights(model, c.weights);
  const r = model.forward(c.batch);
  model.backward();
  return { c, model, loss: r.loss };
}

for (const [kname, base] of [
  ['native', nativeKernels()],
  ['ts', refKernels],
] as const) {
  describe.each(CASES)(`bf16 parity %s (${kname} kernels)`, (name) => {
    it('loss within 2e-2, gradient cosine ≥ 0.999, same routing; the bf16 path is taken', () => {
      const exp = readSafetensors(join(PARITY_DIR, name, 'expected_bf16.safetensors'));
      const bf = gradPass(name, kernelsFor(base, 'bfloat16'));
      const fp = gradPass(name, base);
      const refLoss = getScalarF32(exp, 'loss');
      expect(Math.abs(bf.loss - refLoss) / refLoss).toBeLessThan(2e-2);
      expect(bf.loss, 'bf16 rounding changed the loss').not.toBe(fp.loss);
      let errBf = 0;
      let errFp = 0;
      let worst = 1;
      for (const n of bf.model.paramNames()) {
        const g = getF32(exp, `grad.${n}`);
        const cos = cosine(bf.model.grad(n), g);
        worst = Math.min(worst, cos);
        expect(cos, `grad.${n} cosine`).toBeGreaterThanOrEqual(0.999);
        errBf += maxAbs(bf.model.grad(n), g);
        errFp += maxAbs(fp.model.grad(n), g);
      }
      expect(errBf, 'bf16 gradients nearer the bf16 reference than fp32 gradients').toBeLessThan(errFp);
      for (const [layer, b] of bf.model.moeBuffers) {
        const counts = getI64(exp, `route.layers.${layer}.moe.counts`);
        expect([...b.tokensPerExpert], `layers.${layer} counts`).toEqual([...counts].map(Number));
      }
      console.log(
        `${name} bf16 (${kname}): loss rel ${(Math.abs(bf.loss - refLoss) / refLoss).toExponential(1)}, worst grad cosine ${worst.toFixed(6)}, Σ max-abs err bf16 ${errBf.toExponential(2)} vs fp32 ${errFp.toExponential(2)}`,
      );
    });
  });
}
