// Finite-difference checks of every layer's backward (TS reference kernels, tiny dims).
import { describe, expect, it } from 'vitest';
import { rmsnormBackward, rmsnormForward, rmsnormRelease } from '../../src/models/layers/rmsnorm.ts';
import { embeddingBackward, embeddingForward } from '../../src/models/layers/embedding.ts';
import { FeedForward } from '../../src/models/layers/ffn.ts';
import { GqaAttention } from '../../src/models/layers/attention-gqa.ts';
import { MlaAttention } from '../../src/models/layers/attention-mla.ts';
import { buildRopeTable } from '../../src/models/layers/rope.ts';
import { OutputHead } from '../../src/models/model/head.ts';
import { FP32_EPS, type MlaSpec } from '../../src/models/spec.ts';
import type { Runtime } from '../../src/models/runtime.ts';
import { directionalCheck, dot, makeUnit, randn, runtime, type CheckResult, type Probe } from './gradcheck.ts';

function expectClose(results: CheckResult[], tol = 5e-3): void {
  expect(results.length).toBeGreaterThan(0);
  for (const r of results) {
    expect(r.rel, `${r.name}: fd ${r.fd} vs analytic ${r.an}`).toBeLessThan(tol);
  }
}

interface Layer<C> {
  forward: () => { out: Float32Array; ctx: C };
  backward: (ctx: C, dout: Float32Array) => Float32Array;
  release: (ctx: C) => void;
}

/** Standard check of a layer with input x: probes x and the given parameters. */
function checkLayer<C>(
  rt: Runtime,
  layer: Layer<C>,
  x: Float32Array,
  outLen: number,
  params: { name: string; data: Float32Array; grad: Float32Array }[],
  zero: () => void,
  eps = 1e-3,
): CheckResult[] {
  const R = randn(outLen, 'R');
  let dx = new Float32Array(0);
  const loss = (): number => {
    const { out, ctx } = layer.forward();
    const l = dot(out, R);
    rt.pool.release(out);
    layer.release(ctx);
    return l;
  };
  const grads = (): void => {
    zero();
    const { out, ctx } = layer.forward();
    rt.pool.release(out);
    const d = layer.backward(ctx, R);
    dx = Float32Array.from(d);
    rt.pool.release(d);
  };
  const probes: Probe[] = [
    { name: 'x', data: x, grad: () => dx },
    ...params.map((p) => ({ name: p.name, data: p.data, grad: () => p.grad })),
  ];
  const res = directionalCheck(loss, grads, probes, { eps });
  expect(rt.pool.liveCount).toBe(0);
  return res;
}

describe('layer gradients (finite differences)', () => {
  it('RMSNorm', () => {
    const rt = runtime();
    const N = 5,
      D = 8;
    const u = makeUnit([['n.weight', [D]]], 'rms', 0.2);
    const x = randn(N * D, 'x');
    const res = checkLayer(
      rt,
      {
        forward: () => rmsnormForward(rt, x, u.p('n.weight'), N, D, 1e-5),
        backward: (ctx, dy) => rmsnormBackward(rt, ctx, u.p('n.weight'), u.g('n.weight'), dy),
        release: (ctx) => rmsnormRelease(rt, ctx),
      },
      x,
      N * D,
      [{ name: 'w', data: u.p('n.weight'), grad: u.g('n.weight') }],
      () => u.zeroGrad(),
    );
    expectClose(res);
  });

  it('embedding (repeated ids accumulate)', () => {
    const rt = runtime();
    const V = 7,
      D = 4,
      N = 9;
    const u = makeUnit([['tok_embeddings.weight', [V, D]]], 'emb', 1);
    const ids = Int32Array.from([0, 3, 3, 6, 1, 3, 0, 2, 6]);
    const R = randn(N * D, 'R');
    const loss = (): number => {
      const out = embeddingForward(rt, u.p('tok_embeddings.weight'), ids, N, D);
      const l = dot(out, R);
      rt.pool.release(out);
      return l;
    };
    const grads = (): void => {
      u.zeroGrad();
      embeddingBackward(rt, R, ids, u.g('tok_embeddings.weight'), N, D);
    };
    expectClose(
      directionalCheck(loss, grads, [
        { name: 'table', data: u.p('tok_embeddings.weight'), grad: () => u.g('tok_embeddings.weight') },
      ]),
    );
  });

  it('SwiGLU feed-forward', () => {
    const rt = runtime();
    const N = 6,
      D = 8,
      H = 12;
    const u = makeUnit(
      [
        ['f.w1.weight', [H, D]],
        ['f.w2.weight', [D, H]],
        ['f.w3.weight', [H, D]],
      ],
      'ffn',
    );
    const ffn = new FeedForward(u, 'f', D, H);
    const x = randn(N * D, 'x');
    const res = checkLayer(
      rt,
      {
        forward: () => ffn.forward(rt, x, N),
        backward: (c, d) => ffn.backward(rt, c, d),
        release: (c) => ffn.release(rt, c),
      },
      x,
      N * D,
      ['w1', 'w2', 'w3'].map((w) => ({ name: w, data: u.p(`f.${w}.weight`), grad: u.g(`f.${w}.weight`) })),
      () => u.zeroGrad(),
    );
    expectClose(res);
  });

  for (const [label, useRope, Hkv] of [
    ['GQA attention with RoPE (4 q / 2 kv heads)', true, 2],
    ['MQA attention without RoPE (NoPE layer)', false, 1],
  ] as const) {
    it(label, () => {
      const rt = runtime();
      const B = 2,
        S = 5,
        D = 8,
        Hq = 4,
        hd = 4;
      const u = makeUnit(
        [
          ['a.wq.weight', [Hq * hd, D]],
          ['a.wk.weight', [Hkv * hd, D]],
          ['a.wv.weight', [Hkv * hd, D]],
          ['a.wo.weight', [D, Hq * hd]],
        ],
        `gqa${Hkv}`,
        0.4,
      );
      const rope = buildRopeTable({ kind: 'llama4', dim: hd, theta: 100, seqLen: 8, scaling: null });
      const att = new GqaAttention(
        u,
        'a',
        { kind: 'gqa', nHeads: Hq, nKvHeads: Hkv, headDim: hd, useRope, scale: 0.5 },
        D,
        useRope ? rope : null,
      );
      const x = randn(B * S * D, 'x');
      const res = checkLayer(
        rt,
        {
          forward: () => att.forward(rt, x, B, S),
          backward: (c, d) => att.backward(rt, c, d),
          release: (c) => att.release(rt, c),
        },
        x,
        B * S * D,
        ['wq', 'wk', 'wv', 'wo'].map((w) => ({ name: w, data: u.p(`a.${w}.weight`), grad: u.g(`a.${w}.weight`) })),
        () => u.zeroGrad(),
      );
      expectClose(res);
    });
  }

  for (const qLoraRank of [0, 6]) {
    it(`MLA attention (q_lora_rank ${qLoraRank}, YaRN on)`, () => {
      const rt = runtime();
      const B = 2,
        S = 6,
        D = 8;
      const spec: MlaSpec = {
        kind: 'mla',
        nHeads: 2,
        qLoraRank,
        kvLoraRank: 6,
        qkNope: 4,
        qkRope: 4,
        vHead: 6,
        scale: 0.4,
        normEps: 1e-5,
      };
      const dqk = spec.qkNope + spec.qkRope;
      const q: [string, number[]][] =
        qLoraRank === 0
          ? [['a.wq.weight', [2 * dqk, D]]]
          : [
              ['a.wq_a.weight', [qLoraRank, D]],
              ['a.q_norm.weight', [qLoraRank]],
              ['a.wq_b.weight', [2 * dqk, qLoraRank]],
            ];
      const u = makeUnit(
        [
          ...q,
          ['a.wkv_a.weight', [spec.kvLoraRank + spec.qkRope, D]],
          ['a.kv_norm.weight', [spec.kvLoraRank]],
          ['a.wkv_b.weight', [2 * (spec.qkNope + spec.vHead), spec.kvLoraRank]],
          ['a.wo.weight', [D, 2 * spec.vHead]],
        ],
        `mla${qLoraRank}`,
        0.4,
      );
      const rope = buildRopeTable({
        kind: 'yarn',
        dim: 4,
        theta: 50,
        seqLen: 8,
        originalSeqLen: 4,
        factor: 4,
        betaFast: 32,
        betaSlow: 1,
      });
      const att = new MlaAttention(u, 'a', spec, D, rope);
      const x = randn(B * S * D, 'x');
      const res = checkLayer(
        rt,
        {
          forward: () => att.forward(rt, x, B, S),
          backward: (c, d) => att.backward(rt, c, d),
          release: (c) => att.release(rt, c),
        },
        x,
        B * S * D,
        u.layout.entries.map((e) => ({ name: e.name, data: u.p(e.name), grad: u.g(e.name) })),
        () => u.zeroGrad(),
      );
      expectClose(res);
    });
  }

  it('output head: final norm + output + cross-entropy with ignored labels, scaled by 1/global valid', () => {
    const rt = runtime();
    const N = 6,
      D = 8,
      V = 11;
    const u = makeUnit(
      [
        ['norm.weight', [D]],
        ['output.weight', [V, D]],
      ],
      'head',
      0.5,
    );
    const head = new OutputHead(u, D, V, FP32_EPS);
    const labels = Int32Array.from([3, -100, 10, 0, 3, -100]);
    const scale = 1 / 7; // as if another microbatch held 3 more valid tokens
    const x = randn(N * D, 'h');
    let dx = new Float32Array(0);
    const loss = (): number => {
      const r = head.forward(rt, x, labels, N, scale);
      head.release(rt, r.ctx);
      return r.lossSum * scale;
    };
    const grads = (): void => {
      u.zeroGrad();
      const r = head.forward(rt, x, labels, N, scale);
      const d = head.backward(rt, r.ctx);
      dx = Float32Array.from(d);
      rt.pool.release(d);
    };
    const res = directionalCheck(loss, grads, [
      { name: 'h', data: x, grad: () => dx },
      { name: 'norm', data: u.p('norm.weight'), grad: () => u.g('norm.weight') },
      { name: 'output', data: u.p('output.weight'), grad: () => u.g('output.weight') },
    ]);
    expectClose(res);
    expect(rt.pool.liveCount).toBe(0);
  });
});
