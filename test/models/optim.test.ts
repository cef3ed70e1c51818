// Optimizer math: the LR schedule's λ lists of the debug configs (spec §5.3), clipping (§5.4), AdamW (§5.2), and
// the single-rank train step's order of operations.
import { describe, expect, it } from 'vitest';
import { lrLambda, LRScheduler, scheduleShape, type LRScheduleConfig } from '../../src/models/optim/lr-schedule.ts';
import { clipCoefficient, clipGradNorm, gradNormSquared } from '../../src/models/optim/clip.ts';
import { AdamW } from '../../src/models/optim/adamw.ts';
import { ParamUnit, UnitLayout } from '../../src/models/params/unit.ts';
import { Allocator } from '../../src/tensor/allocator.ts';
import { nativeKernels, refKernels } from '../../src/tensor/kernels.ts';
import { readFileSync } from 'node:fs';
import { resolveModelConfig } from '../../src/models/config.ts';
import { Model } from '../../src/models/model/model.ts';
import { SingleRankTrainer } from '../../src/models/model/train-step.ts';

const debug = (minLrFactor: number): LRScheduleConfig => ({
  totalSteps: 10,
  warmupSteps: 2,
  decayRatio: 0.8,
  decayType: 'linear',
  minLrFactor,
});

describe('LR schedule', () => {
  it('llama4 debug config (min_lr_factor 0.1)', () => {
    const l = Array.from({ length: 10 }, (_, s) => lrLambda(s, debug(0.1)));
    [0.5, 1, 1, 0.8875, 0.775, 0.6625, 0.55, 0.4375, 0.325, 0.2125].forEach((v, i) => expect(l[i]).toBeCloseTo(v, 12));
  });

  it('DSV3 debug config (min_lr_factor 0)', () => {
    const l = Array.from({ length: 10 }, (_, s) => lrLambda(s, debug(0)));
    [0.5, 1, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125].forEach((v, i) => expect(l[i]).toBeCloseTo(v, 12));
  });

  it('decay shapes, caps, half-even rounding and the never-zero virtual step', () => {
    expect(scheduleShape({ ...debug(0), decayRatio: null })).toEqual({ W: 2, D: 8, St: 1 });
    expect(scheduleShape({ ...debug(0), warmupSteps: 50 })).toEqual({ W: 10, D: 0, St: 1 });
    expect(
      scheduleShape({ totalSteps: 5, warmupSteps: 0, decayRatio: 0.5, decayType: 'linear', minLrFactor: 0 }).D,
    ).toBe(2); // round(2.5) = 2
    expect(
      scheduleShape({ totalSteps: 7, warmupSteps: 0, decayRatio: 0.5, decayType: 'linear', minLrFactor: 0 }).D,
    ).toBe(4); // round(3.5) = 4
    const cos = { totalSteps: 3, warmupSteps: 1, decayRatio: 0.8, decayType: 'cosine', minLrFactor: 0.2 } as const;
    expect([0, 1, 2].map((s) => lrLambda(s, cos))).toEqual([1, 1, expect.closeTo(0.6, 12)]);
    const sqrt = { ...debug(0), decayType: 'sqrt' as const };
    expect(lrLambda(3, sqrt)).toBeCloseTo(1 - Math.sqrt(1 / 8), 12);
    expect(lrLambda(9, debug(0))).toBeGreaterThan(0);
  });

  it('the scheduler reports the lr of the coming step and advances', () => {
    const s = new LRScheduler(4e-3, debug(0.1));
    expect(s.lr()).toBeCloseTo(2e-3, 15);
    s.step();
    expect(s.lr()).toBeCloseTo(4e-3, 15);
  });
});

function unitWith(values: number[][]): ParamUnit {
  const specs = values.map((v, i) => ({
    name: `p${i}`,
    shape: [v.length],
    unit: 'u',
    init: { kind: 'zeros' as const },
    expert: false,
  }));
  const u = new ParamUnit(new UnitLayout('u', specs), new Allocator());
  values.forEach((v, i) => u.g(`p${i}`).set(v));
  return u;
}

describe('gradient clipping', () => {
  it('returns the pre-clip norm over every unit and scales every grad by min(max/(norm+1e-6), 1)', () => {
    const a = unitWith([[3, 0], [0]]);
    const b = unitWith([[4]]);
    expect(gradNormSquared(refKernels, [a, b])).toBe(25);
    const n = clipGradNorm(refKernels, [a, b], 1);
    expect(n).toBe(5);
    const coef = clipCoefficient(1, 5);
    expect(coef).toBe(Math.fround(1 / Math.fround(5 + 1e-6)));
    expect(a.g('p0')[0]).toBe(Math.fround(3 * coef));
    expect(b.g('p0')[0]).toBe(Math.fround(4 * coef));
  });

  it('leaves grads unchanged (coefficient 1) below max_norm', () => {
    const a = unitWith([[0.3, -0.4]]);
    expect(clipGradNorm(refKernels, [a], 1)).toBeCloseTo(0.5, 7);
    expect([...a.g('p0')]).toEqual([Math.fround(0.3), Math.fround(-0.4)]);
  });
});

describe('AdamW', () => {
  it("applies torch's decoupled-decay update with per-step bias correction to every parameter", () => {
    const u = unitWith([[0.5, -0.2]]);
    u.p('p0').set([1, 2]);
    const cfg = { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    const opt = new AdamW([u], cfg, refKernels, new Allocator());
    const p = [1, 2];
    const m = [0, 0];
    const v = [0, 0];
    const g = [0.5, -0.2];
    for (let t = 1; t <= 2; t++) {
      opt.step(cfg.lr);
      for (let i = 0; i < 2; i++) {
        p[i] = p[i]! * (1 - cfg.lr * cfg.weight_decay);
        m[i] = 0.9 * m[i]! + 0.1 * g[i]!;
        v[i] = 0.95 * v[i]! + 0.05 * g[i]! * g[i]!;
        p[i] = p[i]! - (cfg.lr / (1 - 0.9 ** t)) * (m[i]! / (Math.sqrt(v[i]!) / Math.sqrt(1 - 0.95 ** t) + cfg.eps));
      }
      expect(u.p('p0')[0]).toBeCloseTo(p[0]!, 6);
      expect(u.p('p0')[1]).toBeCloseTo(p[1]!, 6);
    }
    expect(opt.stateOf('u').step).toBe(2);
  });
});

describe('Adam and AdamW against torch.optim (test/fixtures/optim, scripts/reference/make_optim_fixture.py)', () => {
  const fx = JSON.parse(readFileSync(new URL('../fixtures/optim/adam_adamw.json', import.meta.url), 'utf8')) as {
    beta1: number;
    beta2: number;
    eps: number;
    weight_decay: number;
    init: number[];
    grads: number[][];
    lrs: number[];
    adam: number[][];
    adamw: number[][];
  };
  for (const [kname, k] of [
    ['reference', refKernels],
    ['native', nativeKernels()],
  ] as const) {
    for (const name of ['adamw', 'adam'] as const) {
      it(`${name === 'adam' ? 'Adam (L2 decay in the gradient)' : 'AdamW (decoupled decay)'}, ${kname} kernels: every step within 2e-6 of torch`, () => {
        const u = unitWith([fx.init.map(() => 0)]);
        u.p('p0').set(fx.init);
        const cfg = {
          lr: fx.lrs[0]!,
          beta1: fx.beta1,
          beta2: fx.beta2,
          eps: fx.eps,
          weight_decay: fx.weight_decay,
          l2: name === 'adam',
        };
        const opt = new AdamW([u], cfg, k, new Allocator());
        fx.grads.forEach((g, s) => {
          u.g('p0').set(g);
          opt.step(fx.lrs[s]!);
          const want = fx[name][s]!;
          const worst = Math.max(...want.map((w, i) => Math.abs(u.p('p0')[i]! - w) / Math.max(Math.abs(w), 1e-3)));
          expect(worst, `step ${s + 1}`).toBeLessThan(2e-6);
        });
      });
    }
  }

  for (const l2 of [false, true])
    it(`${l2 ? 'Adam' : 'AdamW'}: step(lr, c) = the gradients multiplied by c first (clip_grad_norm_), bit for bit`, () => {
      const c = 0.3;
      const units = [0, 1].map(() => unitWith([fx.init.map(() => 0)]));
      const opts = units.map((u) => {
        u.p('p0').set(fx.init);
        const cfg = { lr: fx.lrs[0]!, beta1: fx.beta1, beta2: fx.beta2, eps: fx.eps, weight_decay: 0.1, l2 };
        return new AdamW([u], cfg, nativeKernels(), new Allocator());
      });
      fx.grads.forEach((g, s) => {
        units[0]!.g('p0').set(g);
        opts[0]!.step(fx.lrs[s]!, c);
        units[1]!.g('p0').set(g);
        nativeKernels().scale(units[1]!.g('p0'), c, g.length);
        opts[1]!.step(fx.lrs[s]!);
        expect(Array.from(units[0]!.p('p0'))).toEqual(Array.from(units[1]!.p('p0')));
      });
    });

  it('the two decays differ on this fixture (so the comparison can tell them apart)', () => {
    const last = fx.grads.length - 1;
    const gap = Math.max(...fx.adam[last]!.map((a, i) => Math.abs(a - fx.adamw[last]![i]!)));
    expect(gap).toBeGreaterThan(1e-4);
  });
});

describe('single-rank train step', () => {
  it("reports the pre-clip norm and the step's lr, and two microbatches equal one batch of both", () => {
    const cfg = resolveModelConfig(
      {
        name: 'llama4',
        flavor: 'debugmodel',
        args: { dim: 32, n_layers: 2, n_heads: 4, vocab_size: 40, multiple_of: 16, moe_args: { num_experts: 4 } },
      },
      8,
    );
    const train = {
      adamw: { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 },
      schedule: debug(0.1),
      maxNorm: 0.1,
      ac: { mode: 'none' as const },
    };
    const tokens = Int32Array.from({ length: 16 }, (_, i) => (i * 7) % 40);
    const labels = Int32Array.from({ length: 16 }, (_, i) => (i === 3 || i === 12 ? -100 : (i * 5 + 1) % 40));
    const one = new SingleRankTrainer(Model.build(cfg, { seed: 2, kernels: refKernels }), train);
    const two = new SingleRankTrainer(Model.build(cfg, { seed: 2, kernels: refKernels }), train);
    const r1 = one.step([{ tokens, labels, B: 2, S: 8 }]);
    const r2 = two.step([
      { tokens: tokens.subarray(0, 8), labels: labels.subarray(0, 8), B: 1, S: 8 },
      { tokens: tokens.subarray(8), labels: labels.subarray(8), B: 1, S: 8 },
    ]);
    expect(r1.lr).toBeCloseTo(5e-4, 15);
    expect(r1.validTokens).toBe(14);
    expect(r2.loss).toBeCloseTo(r1.loss, 6);
    expect(r2.gradNorm).toBeCloseTo(r1.gradNorm, 5);
    expect(r1.gradNorm).toBeGreaterThan(0.1); // clipping was active
    for (const n of one.model.paramNames()) {
      const a = one.model.param(n);
      const b = two.model.param(n);
      let d = 0;
      for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
      expect(d, n).toBeLessThan(1e-6);
    }
    const s2 = one.step([{ tokens, labels, B: 2, S: 8 }]);
    expect(s2.lr).toBeCloseTo(1e-3, 15);
  });
});
