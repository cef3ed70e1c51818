// GQA attention under bf16 compute with its three input projections fused into one product over the stacked
// weight [Wq; Wk; Wv] (a view of the unit's storage, ParamUnit.span), q and k rounded by their RoPE as it stores
// them. Against the float32 layer on the same weights: the output, the input gradient and each of the four weight
// gradients within bf16 rounding (a slice landing in the wrong gradient, or a missing RoPE, is off by O(1)). A
// layout whose wq/wk/wv are not back to back takes the three separate products.
import { describe, expect, it } from 'vitest';
import { GqaAttention } from '../../src/models/layers/attention-gqa.ts';
import { buildRopeTable } from '../../src/models/layers/rope.ts';
import { ParamUnit, UnitLayout } from '../../src/models/params/unit.ts';
import { createRuntime } from '../../src/models/runtime.ts';
import type { ParamSpec } from '../../src/models/spec.ts';
import { Allocator } from '../../src/tensor/allocator.ts';
import type { Kernels } from '../../src/tensor/kernels-api.ts';
import { nativeKernels } from '../../src/tensor/kernels.ts';
import { kernelsFor } from '../../src/tensor/precision.ts';
import { randF32, rng } from '../kernels/helpers.ts';
import { cosine } from './fixtures.ts';

const NAMES = ['wq', 'wk', 'wv', 'wo'] as const;

/** ‖a − b‖ / ‖b‖ */
function relNorm(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d / n);
}

function unit(D: number, Hq: number, Hkv: number, hd: number): ParamUnit {
  const shapes: Record<(typeof NAMES)[number], number[]> = {
    wq: [Hq * hd, D],
    wk: [Hkv * hd, D],
    wv: [Hkv * hd, D],
    wo: [D, Hq * hd],
  };
  const specs: ParamSpec[] = NAMES.map((w) => ({
    name: `a.${w}.weight`,
    shape: shapes[w],
    unit: 'u',
    init: { kind: 'normal', std: 0.2 },
    expert: false,
  }));
  const u = new ParamUnit(new UnitLayout('u', specs), new Allocator());
  const r = rng(11);
  for (const w of NAMES) u.p(`a.${w}.weight`).set(randF32(u.p(`a.${w}.weight`).length, r, 0.3));
  return u;
}

function run(k: Kernels, D: number, Hq: number, Hkv: number, hd: number, useRope: boolean) {
  const B = 2;
  const S = 40;
  const u = unit(D, Hq, Hkv, hd);
  const gemms = { fwd: 0, bwd: 0 };
  let phase: 'fwd' | 'bwd' = 'fwd';
  const view = Object.create(k) as Kernels;
  for (const name of ['sgemm', 'sgemmBf16'] as const) {
    const fn = k[name].bind(k) as (...a: unknown[]) => void;
    (view as unknown as Record<string, unknown>)[name] = (...a: unknown[]) => {
      gemms[phase]++;
      fn(...a);
    };
  }
  const rt = createRuntime(view, new Allocator());
  const rope = buildRopeTable({ kind: 'llama4', dim: hd, theta: 500, seqLen: S, scaling: null });
  const att = new GqaAttention(
    u,
    'a',
    { kind: 'gqa', nHeads: Hq, nKvHeads: Hkv, headDim: hd, useRope, scale: 1 / Math.sqrt(hd) },
    D,
    useRope ? rope : null,
  );
  const r = rng(5);
  const x = randF32(B * S * D, r, 1);
  const dout = randF32(B * S * D, r, 1);
  const { out, ctx } = att.forward(rt, x, B, S);
  phase = 'bwd';
  const dx = att.backward(rt, ctx, dout);
  return {
    out: out.slice(),
    dx: dx.slice(),
    grads: Object.fromEntries(NAMES.map((w) => [w, u.g(`a.${w}.weight`).slice()])),
    gemms,
  };
}

describe('GQA attention under bf16: fused q/k/v projections', () => {
  it('ParamUnit.span views back-to-back parameters, and refuses a gap', () => {
    const u = unit(32, 4, 2, 16);
    const w = u.span(['a.wq.weight', 'a.wk.weight', 'a.wv.weight'], 'data')!;
    expect(w.length).toBe((4 + 2 + 2) * 16 * 32);
    expect(w.byteOffset).toBe(u.p('a.wq.weight').byteOffset);
    expect(w[4 * 16 * 32]).toBe(u.p('a.wk.weight')[0]);
    expect(u.span(['a.wq.weight', 'a.wk.weight', 'a.wv.weight'], 'grad')!.byteOffset).toBe(
      u.g('a.wq.weight').byteOffset,
    );
    // wk of 1 × 2 × 10 = 20 floats is padded to 32: wv does not follow it directly.
    const gap = unit(10, 2, 1, 2);
    expect(gap.span(['a.wq.weight', 'a.wk.weight', 'a.wv.weight'], 'data')).toBeNull();
  });

  for (const useRope of [true, false])
    it(`matches the float32 layer within bf16 rounding, one product per direction for q/k/v (${useRope ? 'RoPE' : 'NoPE'})`, () => {
      const k = nativeKernels();
      const D = 64;
      const want = run(kernelsFor(k, 'float32'), D, 4, 2, 16, useRope);
      const got = run(kernelsFor(k, 'bfloat16'), D, 4, 2, 16, useRope);
      expect(want.gemms).toEqual({ fwd: 4, bwd: 8 });
      expect(got.gemms).toEqual({ fwd: 2, bwd: 4 });
      for (const [what, a, b] of [
        ['out', got.out, want.out],
        ['dx', got.dx, want.dx],
        ...NAMES.map((w) => [`d${w}`, got.grads[w]!, want.grads[w]!] as const),
      ] as const) {
        expect(cosine(a, b), what).toBeGreaterThan(0.999);
        expect(relNorm(a, b), what).toBeLessThan(2e-2);
      }
    });

  it('takes the three products where the layout has a gap between the weights', () => {
    const k = nativeKernels();
    const got = run(kernelsFor(k, 'bfloat16'), 10, 2, 1, 2, true);
    const want = run(kernelsFor(k, 'float32'), 10, 2, 1, 2, true);
    expect(got.gemms).toEqual({ fwd: 4, bwd: 8 });
    expect(cosine(got.dx, want.dx)).toBeGreaterThan(0.999);
  });
});
