// The MoE stages: finite-difference checks of each stage's dual and of the composed layer, the routing rules of
// spec §9, and expert parallelism — an EP shard computes the same expert outputs, and two simulated EP ranks driving
// the stage functions with a hand-written all-to-all reproduce the single-rank layer, forward and backward.

import { describe, expect, it } from 'vitest';
import { defaultMoEArgs, type MoEArgs } from '../../src/models/moe/args.ts';
import {
  releaseRoute,
  releaseRouteCtx,
  routeBackward,
  routeForward,
  type RouterParams,
} from '../../src/models/moe/router.ts';
import { buildPermutation, releasePermutation } from '../../src/models/moe/permute.ts';
import { expertsBackward, expertsForward, releaseExpertsCtx } from '../../src/models/moe/experts.ts';
import { MoeLayer, type MoeBuffers } from '../../src/models/moe/layer.ts';
import { expertBiasUpdate, halveCheckpointedCounts } from '../../src/models/moe/load-balance.ts';
import { ParamUnit, UnitLayout } from '../../src/models/params/unit.ts';
import { Allocator } from '../../src/tensor/allocator.ts';
import type { MoeSpec, ParamSpec } from '../../src/models/spec.ts';
import { directionalCheck, dot, makeUnit, randn, runtime, type CheckResult } from './gradcheck.ts';
import { createRuntime } from '../../src/models/runtime.ts';
import { kernelsFor } from '../../src/tensor/precision.ts';
import { nativeKernels } from '../../src/tensor/kernels.ts';
import {
  releaseSwigluActs,
  sliceSwigluActs,
  swigluActs,
  swigluFfnBackward,
  swigluFfnForward,
} from '../../src/models/layers/ffn.ts';

function expectClose(results: CheckResult[], tol = 5e-3): void {
  for (const r of results) expect(r.rel, `${r.name}: fd ${r.fd} vs analytic ${r.an}`).toBeLessThan(tol);
}

function moeArgs(o: Partial<MoEArgs>): MoEArgs {
  return { ...defaultMoEArgs(), ...o };
}

const D = 8;
const H = 6;

/** Block unit (router gate [+bias], shared experts) and an experts unit holding `range` of E experts. */
function moeUnits(args: MoEArgs, seed: string, sharedHidden: number, range?: { start: number; count: number }) {
  const E = args.num_experts;
  const p = 'layers.0.moe';
  const blockParams: [string, number[]][] = [[`${p}.router.gate.weight`, [E, D]]];
  if (args.gate_bias) blockParams.push([`${p}.router.gate.bias`, [E]]);
  if (sharedHidden > 0) {
    blockParams.push([`${p}.shared_experts.w1.weight`, [sharedHidden, D]]);
    blockParams.push([`${p}.shared_experts.w2.weight`, [D, sharedHidden]]);
    blockParams.push([`${p}.shared_experts.w3.weight`, [sharedHidden, D]]);
  }
  const block = makeUnit(blockParams, `${seed}/block`, 0.5);
  const full = makeUnit(
    [
      [`${p}.experts.w1`, [E, H, D]],
      [`${p}.experts.w2`, [E, D, H]],
      [`${p}.experts.w3`, [E, H, D]],
    ],
    `${seed}/experts`,
    0.4,
  );
  if (!range) return { block, experts: full, full };
  // An EP shard: same values as rows [start, start+count) of the full tensors.
  const specs: ParamSpec[] = full.layout.entries.map((e) => ({
    name: e.name,
    shape: e.shape,
    unit: 'shard',
    init: e.init,
    expert: true,
  }));
  const shard = new ParamUnit(new UnitLayout('shard', specs, range), new Allocator());
  for (const e of shard.layout.entries) {
    const per = e.numel / range.count;
    shard.p(e.name).set(full.p(e.name).subarray(range.start * per, (range.start + range.count) * per));
  }
  return { block, experts: shard, full };
}

function buffers(E: number, seed: string | null): MoeBuffers {
  return { expertBias: seed ? randn(E, seed, 0.05) : null, tokensPerExpert: new Float32Array(E) };
}

function spec(args: MoEArgs, sharedHidden: number): MoeSpec {
  return { kind: 'moe', args, hidden: H, sharedHidden };
}

const CONFIGS: [string, MoEArgs, number][] = [
  ['sigmoid top-1, score before experts, 1 shared (llama4)', moeArgs({ num_experts: 4, top_k: 1 }), H],
  [
    'softmax top-3, groups 4/2, route_norm, route_scale 1.5, weights after experts, 2 shared (DSV3)',
    moeArgs({
      num_experts: 8,
      top_k: 3,
      score_func: 'softmax',
      route_norm: true,
      route_scale: 1.5,
      score_before_experts: false,
      num_expert_groups: 4,
      num_limited_groups: 2,
      num_shared_experts: 2,
    }),
    2 * H,
  ],
  [
    'sigmoid top-2, route_norm, gate bias, no shared, score before experts',
    moeArgs({ num_experts: 6, top_k: 2, route_norm: true, route_scale: 2.5, gate_bias: true, num_shared_experts: 0 }),
    0,
  ],
];

describe('MoE router stage', () => {
  for (const [label, args] of CONFIGS) {
    it(`router gradient: ${label}`, () => {
      const rt = runtime();
      const N = 10;
      const { block } = moeUnits(args, 'router', 0);
      const p: RouterParams = {
        gate: block.p('layers.0.moe.router.gate.weight'),
        gateBias: args.gate_bias ? block.p('layers.0.moe.router.gate.bias') : null,
        expertBias: randn(args.num_experts, 'bias', 0.05),
      };
      const g = {
        gate: block.g('layers.0.moe.router.gate.weight'),
        gateBias: args.gate_bias ? block.g('layers.0.moe.router.gate.bias') : null,
      };
      const x = randn(N * D, 'x');
      const R = randn(N * args.top_k, 'Rg');
      let baseline: number[] | null = null;
      let dx = new Float32Array(N * D);
      const loss = (): number => {
        const { route, ctx } = routeForward(rt, args, p, x, N, D);
        // The selection is piecewise constant: a perturbation must not flip it, or the difference is meaningless.
        expect([...route.topIdx]).toEqual(baseline);
        const l = dot(route.gates, R);
        releaseRouteCtx(rt, ctx);
        releaseRoute(rt, route);
        return l;
      };
      const grads = (): void => {
        block.zeroGrad();
        const { route, ctx } = routeForward(rt, args, p, x, N, D);
        baseline = [...route.topIdx];
        dx = new Float32Array(N * D);
        routeBackward(rt, args, p, g, ctx, route, R, dx, D);
        releaseRoute(rt, route);
      };
      const probes = [
        { name: 'x', data: x, grad: () => dx },
        { name: 'gate', data: p.gate, grad: () => g.gate },
        ...(p.gateBias ? [{ name: 'gate.bias', data: p.gateBias, grad: () => g.gateBias! }] : []),
      ];
      expectClose(directionalCheck(loss, grads, probes, { eps: 1e-3 }));
      expect(rt.pool.liveCount).toBe(0);
    });
  }

  it('selects by biased scores, gates from unbiased scores, slots by descending score, ties to the lower id', () => {
    const rt = runtime();
    const E = 5;
    const N = 2;
    // gate = identity-like so that logits = x (D = E here)
    const gate = new Float32Array(E * E);
    for (let e = 0; e < E; e++) gate[e * E + e] = 1;
    const x = Float32Array.from([
      0.1,
      0.5,
      0.3,
      0.5,
      -1, // token 0: experts 1 and 3 tie at 0.5
      2,
      1,
      0,
      -1,
      0.5, // token 1
    ]);
    const expertBias = Float32Array.from([0, 0, 0, 0, 0.6]);
    const args = moeArgs({ num_experts: E, top_k: 3, score_func: 'sigmoid' });
    const { route, ctx } = routeForward(rt, args, { gate, gateBias: null, expertBias: null }, x, N, E);
    expect([...route.topIdx.subarray(0, 3)]).toEqual([1, 3, 2]); // tie 1 vs 3 → 1 first
    expect([...route.topIdx.subarray(3, 6)]).toEqual([0, 1, 4]);
    const sig = (v: number) => Math.fround(1 / (1 + Math.exp(-v)));
    expect(route.gates[0]).toBe(sig(0.5));
    const biased = routeForward(rt, args, { gate, gateBias: null, expertBias }, x, N, E);
    // the bias lifts expert 4 (σ(−1) + 0.6 = 0.87; σ(0.5) + 0.6 = 1.22) to the top of both tokens' choices
    expect([...biased.route.topIdx.subarray(0, 3)]).toEqual([4, 1, 3]);
    expect([...biased.route.topIdx.subarray(3, 6)]).toEqual([4, 0, 1]);
    // ... but its gates are its unbiased scores
    expect(biased.route.gates[0]).toBe(sig(-1));
    expect(biased.route.gates[3]).toBe(sig(0.5));
    expect([...biased.route.counts]).toEqual([1, 2, 0, 1, 2]);
    releaseRouteCtx(rt, ctx);
    releaseRoute(rt, route);
    releaseRouteCtx(rt, biased.ctx);
    releaseRoute(rt, biased.route);
  });

  it('node-limited routing keeps the groups with the best top-2 sums', () => {
    const rt = runtime();
    const E = 8;
    const gate = new Float32Array(E * E);
    for (let e = 0; e < E; e++) gate[e * E + e] = 1;
    // softmax ∝ exp(x); groups of 2 by top-2 sums: {0,1} e²+e¹, {2,3} e^1.95+e⁻³, {4,5} 2e^1.5, {6,7} 2
    // → keep {0,1} and {4,5}, although expert 2 has the second-best score of all
    const x = Float32Array.from([2.0, 1.0, 1.95, -3, 1.5, 1.5, 0, 0]);
    const args = moeArgs({
      num_experts: E,
      top_k: 3,
      score_func: 'softmax',
      num_expert_groups: 4,
      num_limited_groups: 2,
    });
    const { route, ctx } = routeForward(rt, args, { gate, gateBias: null, expertBias: null }, x, 1, E);
    // experts 4 and 5 tie: the lower id takes the earlier slot
    expect([...route.topIdx]).toEqual([0, 4, 5]);
    releaseRouteCtx(rt, ctx);
    releaseRoute(rt, route);
  });

  it('debug force-load-balance routes round-robin', () => {
    const rt = runtime();
    const args = moeArgs({ num_experts: 3, top_k: 2, _debug_force_load_balance: true });
    const { route, ctx } = routeForward(
      rt,
      args,
      { gate: randn(3 * D, 'g'), gateBias: null, expertBias: null },
      randn(4 * D, 'x'),
      4,
      D,
    );
    expect([...route.topIdx]).toEqual([0, 1, 2, 0, 1, 2, 0, 1]);
    expect([...route.counts]).toEqual([3, 3, 2]);
    releaseRouteCtx(rt, ctx);
    releaseRoute(rt, route);
  });
});

describe('MoE dispatch and experts stages', () => {
  it('groups rows stably by expert, token-major within an expert', () => {
    const rt = runtime();
    const route = {
      N: 4,
      K: 2,
      E: 3,
      topIdx: Int32Array.from([2, 0, 0, 2, 1, 0, 2, 1]),
      gates: Float32Array.from([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
      counts: Int32Array.from([3, 2, 3]),
    };
    const perm = buildPermutation(rt, route);
    expect([...perm.slot]).toEqual([1, 2, 5, 4, 7, 0, 3, 6]);
    expect([...perm.srcToken]).toEqual([0, 1, 2, 2, 3, 0, 1, 3]);
    expect([...perm.gatesSorted]).toEqual([...perm.slot].map((j) => route.gates[j]!));
    releasePermutation(rt, perm);
  });

  it('experts gradient, with an expert that receives no rows', () => {
    const rt = runtime();
    const args = moeArgs({ num_experts: 3 });
    const { experts: u } = moeUnits(args, 'exp', 0);
    const n = (i: number) => `layers.0.moe.experts.w${i}`;
    const w = { w1: u.p(n(1)), w2: u.p(n(2)), w3: u.p(n(3)) };
    const g = { w1: u.g(n(1)), w2: u.g(n(2)), w3: u.g(n(3)) };
    const counts = Int32Array.from([3, 0, 4]);
    const rows = randn(7 * D, 'rows');
    const R = randn(7 * D, 'R');
    let dRows = new Float32Array(0);
    const loss = (): number => {
      const { out, ctx } = expertsForward(rt, w, rows, counts, D, H);
      const l = dot(out, R);
      rt.pool.release(out);
      releaseExpertsCtx(rt, ctx);
      return l;
    };
    const grads = (): void => {
      u.zeroGrad();
      const { out, ctx } = expertsForward(rt, w, rows, counts, D, H);
      rt.pool.release(out);
      const d = expertsBackward(rt, w, g, ctx, R, D, H);
      dRows = Float32Array.from(d);
      rt.pool.release(d);
    };
    expectClose(
      directionalCheck(loss, grads, [
        { name: 'rows', data: rows, grad: () => dRows },
        { name: 'w1', data: w.w1, grad: () => g.w1 },
        { name: 'w2', data: w.w2, grad: () => g.w2 },
        { name: 'w3', data: w.w3, grad: () => g.w3 },
      ]),
    );
    // expert 1 got no rows: no gradient
    const per = H * D;
    expect(g.w1.subarray(per, 2 * per).every((v) => v === 0)).toBe(true);
    expect(rt.pool.liveCount).toBe(0);
  });
});

// Under bf16 the experts' products run as one grouped call per kind (experts.ts, Kernels.sgemmBf16Groups); they
// must give exactly what one swigluFfn call per expert gives, with empty experts and no rows at all.
describe('bf16 experts: grouped products = one SwiGLU call per expert', () => {
  const rt = createRuntime(kernelsFor(nativeKernels(), 'bfloat16'), new Allocator());
  const L = 4;
  const w = { w1: randn(L * H * D, 'gw1', 0.3), w2: randn(L * D * H, 'gw2', 0.3), w3: randn(L * H * D, 'gw3', 0.3) };
  for (const list of [
    [5, 0, 70, 3],
    [0, 0, 0, 0],
  ]) {
    it(`counts ${list.join(', ')}`, () => {
      const counts = Int32Array.from(list);
      const Rn = list.reduce((a, b) => a + b, 0);
      const rows = randn(Rn * D, 'grows');
      const dY = randn(Rn * D, 'gdy');
      const gGrouped = { w1: randn(L * H * D, 'g0'), w2: randn(L * D * H, 'g1'), w3: randn(L * H * D, 'g2') };
      const gLoop = { w1: gGrouped.w1.slice(), w2: gGrouped.w2.slice(), w3: gGrouped.w3.slice() };
      const { out, ctx } = expertsForward(rt, w, rows, counts, D, H);
      const dRows = expertsBackward(rt, w, gGrouped, ctx, dY, D, H);
      // The per-expert path, as experts.ts ran it before the grouped call.
      const rows16 = new Uint16Array(Rn * D);
      rt.k.toBf16(rows, rows16, Rn * D);
      const dY16 = new Uint16Array(Rn * D);
      rt.k.toBf16(dY, dY16, Rn * D);
      const acts = swigluActs(rt, Rn * H);
      const outLoop = new Float32Array(Rn * D);
      const dLoop = new Float32Array(Rn * D);
      const dh = new Float32Array(Rn * H);
      const sl = (a: Float32Array, l: number, m: number) => a.subarray(l * m, (l + 1) * m);
      let off = 0;
      list.forEach((n, l) => {
        const wl = { w1: sl(w.w1, l, H * D), w2: sl(w.w2, l, H * D), w3: sl(w.w3, l, H * D) };
        const gl = { w1: sl(gLoop.w1, l, H * D), w2: sl(gLoop.w2, l, H * D), w3: sl(gLoop.w3, l, H * D) };
        const a = sliceSwigluActs(acts, off * H);
        swigluFfnForward(rt.k, wl, rows16.subarray(off * D), n, D, H, a, outLoop.subarray(off * D), rt.pool);
        swigluFfnBackward(
          rt.k,
          wl,
          gl,
          rows16.subarray(off * D),
          n,
          D,
          H,
          a,
          dY16.subarray(off * D),
          dh.subarray(off * H),
          dLoop.subarray(off * D),
          rt.pool,
        );
        off += n;
      });
      releaseSwigluActs(rt, acts);
      expect(Array.from(out)).toEqual(Array.from(outLoop));
      expect(Array.from(dRows)).toEqual(Array.from(dLoop));
      for (const k of ['w1', 'w2', 'w3'] as const) expect(Array.from(gGrouped[k]), k).toEqual(Array.from(gLoop[k]));
      rt.pool.release(out);
      rt.pool.release(dRows);
      expect(rt.pool.liveCount).toBe(0);
    });
  }
});

describe('MoE layer (composed stages)', () => {
  for (const [label, args, sharedHidden] of CONFIGS) {
    it(`gradient: ${label}`, () => {
      const rt = runtime();
      const N = 10;
      const { block, experts } = moeUnits(args, 'layer', sharedHidden);
      const layer = new MoeLayer(spec(args, sharedHidden), 0, block, experts, buffers(args.num_experts, 'eb'), D);
      const x = randn(N * D, 'x');
      const R = randn(N * D, 'R');
      let dx = new Float32Array(0);
      let baseline: number[] = [];
      const loss = (): number => {
        const { out, ctx } = layer.forward(rt, x, N);
        expect([...ctx.route.topIdx]).toEqual(baseline);
        const l = dot(out, R);
        rt.pool.release(out);
        layer.release(rt, ctx);
        return l;
      };
      const grads = (): void => {
        block.zeroGrad();
        experts.zeroGrad();
        const { out, ctx } = layer.forward(rt, x, N);
        baseline = [...ctx.route.topIdx];
        rt.pool.release(out);
        const d = layer.backward(rt, ctx, R);
        dx = Float32Array.from(d);
        rt.pool.release(d);
      };
      const probes = [
        { name: 'x', data: x, grad: () => dx },
        ...[block, experts].flatMap((u) =>
          u.layout.entries.map((e) => ({ name: e.name, data: u.p(e.name), grad: () => u.g(e.name) })),
        ),
      ];
      expectClose(directionalCheck(loss, grads, probes, { eps: 1e-3 }));
      expect(rt.pool.liveCount).toBe(0);
    });
  }

  it('accumulates router counts into tokens_per_expert on every forward', () => {
    const rt = runtime();
    const [, args, sh] = CONFIGS[1]!;
    const { block, experts } = moeUnits(args, 'cnt', sh);
    const b = buffers(args.num_experts, 'eb');
    const layer = new MoeLayer(spec(args, sh), 0, block, experts, b, D);
    const x = randn(7 * D, 'x');
    const r1 = layer.forward(rt, x, 7);
    const counts = [...r1.ctx.route.counts];
    expect(counts.reduce((a, c) => a + c, 0)).toBe(7 * args.top_k);
    layer.release(rt, r1.ctx);
    rt.pool.release(r1.out);
    expect([...b.tokensPerExpert]).toEqual(counts);
    const r2 = layer.forward(rt, x, 7);
    layer.release(rt, r2.ctx);
    rt.pool.release(r2.out);
    expect([...b.tokensPerExpert]).toEqual(counts.map((c) => 2 * c));
  });
});

describe('expert parallelism through the stage functions', () => {
  const [, args, sharedHidden] = CONFIGS[1]!; // 8 experts, top-3, weights after experts, shared experts

  it('an EP shard computes the same outputs as the full layer for its experts', () => {
    const rt = runtime();
    const full = moeUnits(args, 'ep', sharedHidden);
    const shard = moeUnits(args, 'ep', sharedHidden, { start: 4, count: 4 });
    const fullLayer = new MoeLayer(spec(args, sharedHidden), 0, full.block, full.experts, buffers(8, null), D);
    const shardLayer = new MoeLayer(spec(args, sharedHidden), 0, shard.block, shard.experts, buffers(8, null), D);
    expect(shardLayer.holdsAllExperts).toBe(false);
    const counts = Int32Array.from([2, 0, 1, 3, 2, 0, 4, 1]);
    const rows = randn(13 * D, 'rows');
    const all = fullLayer.compute(rt, rows, counts);
    // rows of experts 4..7 start after the 6 rows of experts 0..3
    const mine = shardLayer.compute(rt, rows.subarray(6 * D), counts.subarray(4));
    expect([...mine.out]).toEqual([...all.out.subarray(6 * D, 13 * D)]);
    expect(() => shardLayer.forward(rt, rows, 2)).toThrow(/holds experts \[4, 8\) of 8/);
  });

  it('two EP ranks (a2a by hand) reproduce the single-rank layer, forward and backward', () => {
    const rt = runtime();
    const P = 2;
    const L = 4;
    const Ntok = [6, 5];
    const full = moeUnits(args, 'ep2', sharedHidden);
    const ranks = [0, 1].map((r) => moeUnits(args, 'ep2', sharedHidden, { start: r * L, count: L }));
    const bias = randn(8, 'eb', 0.05);
    const mk = (u: ReturnType<typeof moeUnits>) =>
      new MoeLayer(
        spec(args, sharedHidden),
        0,
        u.block,
        u.experts,
        { expertBias: bias, tokensPerExpert: new Float32Array(8) },
        D,
      );
    const fullLayer = mk(full);
    const layers = ranks.map(mk);
    const xs = Ntok.map((n, r) => randn(n * D, `x${r}`));
    const dOuts = Ntok.map((n, r) => randn(n * D, `dout${r}`));

    // Reference: each rank's tokens through the full single-rank layer.
    const ref = xs.map((x, r) => {
      full.block.zeroGrad();
      full.experts.zeroGrad();
      const f = fullLayer.forward(rt, x, Ntok[r]!);
      const out = Float32Array.from(f.out);
      rt.pool.release(f.out);
      const dx = fullLayer.backward(rt, f.ctx, dOuts[r]!);
      const res = {
        out,
        dx: Float32Array.from(dx),
        gate: Float32Array.from(full.block.g('layers.0.moe.router.gate.weight')),
      };
      rt.pool.release(dx);
      return res;
    });
    const refExpertGrad = new Float32Array(full.experts.grad.length);
    for (let r = 0; r < P; r++) {
      full.experts.zeroGrad();
      const f = fullLayer.forward(rt, xs[r]!, Ntok[r]!);
      rt.pool.release(f.out);
      rt.pool.release(fullLayer.backward(rt, f.ctx, dOuts[r]!));
      for (let i = 0; i < refExpertGrad.length; i++) refExpertGrad[i]! += full.experts.grad[i]!;
    }

    // Forward, stage by stage, on both ranks.
    const st = xs.map((x, r) => {
      const route = layers[r]!.route(rt, x, Ntok[r]!);
      const { perm, rows } = layers[r]!.permute(rt, route.route, x);
      return { route, perm, rows };
    });
    // exchangeCounts + dispatch: rank s sends the rows of experts [d·L, (d+1)·L) to rank d (contiguous, sorted).
    const offsets = st.map((s) => {
      const o = [0];
      for (let e = 0; e < 8; e++) o.push(o[e]! + s.perm.counts[e]!);
      return o;
    });
    const recv = [0, 1].map((d) => {
      const parts: Float32Array[] = [];
      const localCounts = new Int32Array(L);
      // regroup by (local expert, source rank) as torchtitan's _permute does
      const order: { s: number; e: number }[] = [];
      for (let l = 0; l < L; l++) for (let s = 0; s < P; s++) order.push({ s, e: d * L + l });
      for (const { s, e } of order) {
        parts.push(st[s]!.rows.subarray(offsets[s]![e]! * D, offsets[s]![e + 1]! * D));
        localCounts[e - d * L]! += st[s]!.perm.counts[e]!;
      }
      const rows = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
      let o = 0;
      for (const p of parts) {
        rows.set(p, o);
        o += p.length;
      }
      return { rows, localCounts, order };
    });
    const computed = recv.map((rv, d) => layers[d]!.compute(rt, rv.rows, rv.localCounts));
    // combine: send each (source, expert) block back to its source, in the source's sorted order.
    const back = st.map((s, src) => {
      const y = rt.pool.get(s.perm.R * D);
      for (let d = 0; d < P; d++) {
        let o = 0;
        for (const { s: from, e } of recv[d]!.order) {
          const n = offsets[from]![e + 1]! - offsets[from]![e]!;
          if (from === src) y.set(computed[d]!.out.subarray(o * D, (o + n) * D), offsets[src]![e]! * D);
          o += n;
        }
      }
      return y;
    });
    const outs = st.map((s, r) => {
      const cb = layers[r]!.combine(rt, s.perm, back[r]!, Ntok[r]!);
      const sh = layers[r]!.sharedForward(rt, xs[r]!, Ntok[r]!)!;
      rt.k.add(cb.out, sh.out, cb.out, Ntok[r]! * D);
      return { out: cb.out, cb: cb.ctx, sh: sh.ctx, shOut: sh.out };
    });
    for (let r = 0; r < P; r++) {
      const d = outs[r]!.out.map((v, i) => Math.abs(v - ref[r]!.out[i]!));
      expect(Math.max(...d), `rank ${r} forward`).toBeLessThan(1e-6);
    }

    // Backward: combineGrad on the source → dispatch the row grads to the experts' ranks → computeGrad → back →
    // dispatchGrad and routerGrad on the source.
    for (const u of ranks) {
      u.block.zeroGrad();
      u.experts.zeroGrad();
    }
    const dGates = st.map((s) => new Float32Array(s.route.route.N * s.route.route.K));
    const dY = st.map((s, r) => layers[r]!.combineGrad(rt, s.perm, outs[r]!.cb, dOuts[r]!, dGates[r]!));
    const dYrecv = recv.map((rv) => {
      const buf = new Float32Array(rv.rows.length);
      let o = 0;
      for (const { s, e } of rv.order) {
        const n = offsets[s]![e + 1]! - offsets[s]![e]!;
        buf.set(dY[s]!.subarray(offsets[s]![e]! * D, offsets[s]![e + 1]! * D), o * D);
        o += n;
      }
      return buf;
    });
    const dRowsExp = computed.map((c, d) => layers[d]!.computeGrad(rt, c.ctx, dYrecv[d]!));
    for (let r = 0; r < P; r++) {
      const dRows = new Float32Array(st[r]!.perm.R * D);
      for (let d = 0; d < P; d++) {
        let o = 0;
        for (const { s, e } of recv[d]!.order) {
          const n = offsets[s]![e + 1]! - offsets[s]![e]!;
          if (s === r) dRows.set(dRowsExp[d]!.subarray(o * D, (o + n) * D), offsets[r]![e]! * D);
          o += n;
        }
      }
      const dx = layers[r]!.shared!.backward(rt, outs[r]!.sh, dOuts[r]!);
      layers[r]!.dispatchGrad(rt, st[r]!.perm, xs[r]!, dRows, dx, dGates[r]!);
      layers[r]!.routerGrad(rt, st[r]!.route.ctx, st[r]!.route.route, dGates[r]!, dx);
      const diff = dx.map((v, i) => Math.abs(v - ref[r]!.dx[i]!));
      expect(Math.max(...diff), `rank ${r} dx`).toBeLessThan(1e-6);
    }
    // Expert weight grads: each rank holds the sum over both ranks' tokens for its experts.
    for (let d = 0; d < P; d++) {
      const per = ranks[d]!.experts.layout.entries[0]!.numel;
      for (const e of ranks[d]!.experts.layout.entries) {
        const fullE = full.experts.layout.entry(e.name);
        const refSlice = refExpertGrad.subarray(fullE.offset + d * per, fullE.offset + (d + 1) * per);
        const got = ranks[d]!.experts.g(e.name);
        const diff = got.map((v, i) => Math.abs(v - refSlice[i]!));
        expect(Math.max(...diff), `${e.name} rank ${d}`).toBeLessThan(1e-6);
      }
    }
  });
});

describe('auxiliary-loss-free bias update', () => {
  it('moves under-loaded experts up, over-loaded down, keeps Σ bias, leaves mean-load experts', () => {
    const bias = Float32Array.from([0.01, -0.02, 0.0, 0.01]);
    const before = bias.reduce((a, b) => a + b, 0);
    const counts = Float32Array.from([10, 2, 5, 3]); // mean 5
    expertBiasUpdate(counts, bias, 1e-3);
    const c = Math.fround(1e-3);
    // Δ = c·[-1, 1, 0, 1] − mean = c·[-1.25, 0.75, -0.25, 0.75]
    const expected = [0.01 - 1.25 * c, -0.02 + 0.75 * c, -0.25 * c, 0.01 + 0.75 * c];
    expected.forEach((v, i) => expect(bias[i]).toBeCloseTo(v, 8));
    expect(bias.reduce((a, b) => a + b, 0)).toBeCloseTo(before, 7);
  });

  it('halving undoes the activation-checkpointing double count with floor', () => {
    const t = Float32Array.from([7, 4, 0, 1]);
    halveCheckpointedCounts(t);
    expect([...t]).toEqual([3, 2, 0, 0]);
  });
});
