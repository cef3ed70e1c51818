// SDPA under bf16 compute (src/models/layers/sdpa.ts): q, k, v, o stored as bf16 on either kind of CPU; the bf16
// kernel where the CPU has bf16 dot products, the f32 kernel on the widened values where it has not (told by
// blasInfo().bf16Dot). The two must agree within bf16's rounding, and each must take its own kernels.
import { describe, expect, it } from 'vitest';
import { createRuntime } from '../../src/models/runtime.ts';
import { sdpaBackward, sdpaForward, type SdpaShape } from '../../src/models/layers/sdpa.ts';
import { Allocator } from '../../src/tensor/allocator.ts';
import type { Kernels } from '../../src/tensor/kernels-api.ts';
import { nativeKernels } from '../../src/tensor/kernels.ts';
import { kernelsFor } from '../../src/tensor/precision.ts';
import { expectClose, randF32, rng } from '../kernels/helpers.ts';

/** A view of `k` whose CPU reports bf16 dot products or not, counting the attention kernels it runs. */
function counted(k: Kernels, bf16Dot: boolean): { k: Kernels; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  const view = Object.create(k) as Kernels;
  view.blasInfo = () => ({ ...k.blasInfo(), bf16Dot });
  for (const name of ['attentionFwd', 'attentionBwd', 'attentionFwdBf16', 'attentionBwdBf16'] as const) {
    const fn = k[name].bind(k) as (...a: unknown[]) => void;
    (view as unknown as Record<string, unknown>)[name] = (...a: unknown[]) => {
      calls.set(name, (calls.get(name) ?? 0) + 1);
      fn(...a);
    };
  }
  return { k: view, calls };
}

describe('SDPA under bf16 compute', () => {
  const s: SdpaShape = { B: 2, S: 70, Hq: 4, Hkv: 2, dk: 16, dv: 16, scale: 0.25 };
  const N = s.B * s.S;

  function run(bf16Dot: boolean) {
    const { k, calls } = counted(kernelsFor(nativeKernels(), 'bfloat16'), bf16Dot);
    const rt = createRuntime(k, new Allocator());
    const r = rng(3);
    const take = (x: Float32Array) => {
      const p = rt.pool.get(x.length);
      p.set(x);
      return p;
    };
    const q = take(randF32(N * s.Hq * s.dk, r, 2));
    const kk = take(randF32(N * s.Hkv * s.dk, r, 2));
    const v = take(randF32(N * s.Hkv * s.dv, r));
    const dO = take(randF32(N * s.Hq * s.dv, r));
    const saved = sdpaForward(rt, s, q, kk, v);
    expect(saved.q).toBeInstanceOf(Uint16Array);
    expect(saved.o).toBeInstanceOf(Uint16Array);
    const o = new Float32Array(saved.o.length);
    k.fromBf16(saved.o as Uint16Array, o, o.length);
    const g = sdpaBackward(rt, s, saved, dO);
    return { o, dq: g.dq.slice(), dk: g.dk.slice(), dv: g.dv.slice(), calls };
  }

  it('stores bf16 either way; the bf16 kernel with bf16 dot products, the f32 kernel on widened values without', () => {
    const a = run(true);
    const b = run(false);
    expect(Object.fromEntries(a.calls)).toEqual({ attentionFwdBf16: 1, attentionBwdBf16: 1 });
    expect(Object.fromEntries(b.calls)).toEqual({ attentionFwd: 1, attentionBwd: 1 });
    // Same stored inputs; they differ by the bf16 kernel's rounding of P and dS (2⁻⁹ relative) and o's last bit.
    expectClose(b.o, a.o, 1e-2, 'o');
    for (const key of ['dq', 'dk', 'dv'] as const) expectClose(b[key], a[key], 1e-2, key, s.scale * s.dv * 2);
  });
});
