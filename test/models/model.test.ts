// The single-rank Model: activation checkpointing equivalence (and its tokens_per_expert double count), strict
// weight loading, init, input validation, memory accounting, and an EP-shard model.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveModelConfig } from '../../src/models/config.ts';
import { Model, type Microbatch } from '../../src/models/model/model.ts';
import { loadWeights, saveWeights, stateDict } from '../../src/models/model/weights.ts';
import { updateExpertBiases } from '../../src/models/model/train-step.ts';
import type { AcMode } from '../../src/models/model/ac.ts';
import { isCheckpointed, parseAcMode } from '../../src/models/model/ac.ts';
import {
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  SafetensorsFile,
} from '../../src/models/safetensors.ts';
import { refKernels } from '../../src/tensor/kernels.ts';
import { Allocator } from '../../src/tensor/allocator.ts';
import { loadCase, relMaxDiff } from './fixtures.ts';

const tinyLlama = () =>
  resolveModelConfig(
    {
      name: 'llama4',
      flavor: 'debugmodel',
      args: {
        dim: 32,
        n_layers: 4,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 50,
        multiple_of: 16,
        moe_args: { num_experts: 4, top_k: 2 },
      },
    },
    12,
  );
const tinyDsv3 = () =>
  resolveModelConfig(
    {
      name: 'deepseek_v3',
      flavor: 'debugmodel',
      args: {
        dim: 32,
        n_layers: 3,
        n_heads: 2,
        vocab_size: 50,
        inter_dim: 48,
        moe_inter_dim: 16,
        kv_lora_rank: 16,
        q_lora_rank: 8,
        qk_nope_head_dim: 8,
        qk_rope_head_dim: 4,
        v_head_dim: 8,
        original_seq_len: 8,
      },
    },
    12,
  );

function batch(V: number, B: number, S: number, seed: number): Microbatch {
  const tokens = Int32Array.from({ length: B * S }, (_, i) => (i * 17 + seed * 5) % V);
  const labels = Int32Array.from({ length: B * S }, (_, i) => (i % 7 === 3 ? -100 : (i * 11 + seed) % V));
  return { tokens, labels, B, S };
}

function gradsOf(m: Model): Map<string, Float32Array> {
  return new Map(m.paramNames().map((n) => [n, Float32Array.from(m.grad(n))]));
}

describe('activation checkpointing', () => {
  for (const [label, cfg] of [
    ['llama4', tinyLlama],
    ['deepseek_v3 (q-LoRA, YaRN)', tinyDsv3],
  ] as const) {
    it(`${label}: none, selective 2, selective op and full give identical loss and grads; counts double under recompute`, () => {
      const modes: AcMode[] = [
        { mode: 'none' },
        { mode: 'selective', every: 2 },
        { mode: 'selective', op: true },
        { mode: 'full' },
      ];
      let ref: { loss: number; grads: Map<string, Float32Array> } | null = null;
      for (const ac of modes) {
        const m = Model.build(cfg(), { seed: 3, kernels: refKernels });
        const mb = batch(50, 2, 12, 1);
        const r = m.forward(mb, { ac });
        m.backward();
        const grads = gradsOf(m);
        if (!ref) ref = { loss: r.loss, grads };
        else {
          expect(r.loss).toBe(ref.loss);
          for (const [n, g] of grads) expect(relMaxDiff(g, ref.grads.get(n)!), `${JSON.stringify(ac)} ${n}`).toBe(0);
        }
        for (const moe of m.moeLayers()) {
          const total = moe.buffers.tokensPerExpert.reduce((a, b) => a + b, 0);
          const once = 2 * 12 * moe.spec.args.top_k;
          expect(total, `layer ${moe.layerId} ${JSON.stringify(ac)}`).toBe(
            isCheckpointed(moe.layerId, ac) ? 2 * once : once,
          );
        }
        expect(m.rt.pool.liveCount).toBe(0);
      }
    });
  }

  it('the bias update halves the counts of checkpointed blocks only', () => {
    const ac: AcMode = { mode: 'selective', every: 2 };
    const withAc = Model.build(tinyLlama(), { seed: 3, kernels: refKernels });
    const without = Model.build(tinyLlama(), { seed: 3, kernels: refKernels });
    for (const [m, mode] of [
      [withAc, ac],
      [without, { mode: 'none' }],
    ] as const) {
      m.forward(batch(50, 2, 12, 1), { ac: mode });
      m.backward();
      updateExpertBiases(m, mode);
    }
    for (const [layer, b] of withAc.moeBuffers) {
      expect([...b.expertBias!], `layer ${layer}`).toEqual([...without.moeBuffers.get(layer)!.expertBias!]);
      expect(b.tokensPerExpert.every((v) => v === 0)).toBe(true);
    }
    expect(isCheckpointed(1, ac) && isCheckpointed(3, ac) && !isCheckpointed(0, ac)).toBe(true);
  });

  it('parses torchtitan options', () => {
    expect(parseAcMode('selective', '2')).toEqual({ mode: 'selective', every: 2 });
    expect(parseAcMode('selective', 'op')).toEqual({ mode: 'selective', op: true });
    expect(isCheckpointed(4, parseAcMode('selective', 0))).toBe(true);
    expect(() => parseAcMode('memory_budget')).toThrow(/memory_budget/);
    expect(() => parseAcMode('selective', 'x')).toThrow(/"op" or a non-negative integer/);
  });
});

describe('weights', () => {
  const c = loadCase('llama4_gqa_ropescale_top1');

  function withChange(mutate: (m: Map<string, { shape: number[]; data: Float32Array }>) => void): SafetensorsFile {
    const m = new Map([...c.weights].map(([k, v]) => [k, { shape: [...v.shape], data: v.data as Float32Array }]));
    mutate(m);
    return parseSafetensors(serializeSafetensors(m), 'edited.safetensors');
  }

  it('rejects a missing tensor, naming it', () => {
    const f = withChange((m) => m.delete('layers.1.moe.experts.w2'));
    expect(() => loadWeights(Model.build(c.config, { kernels: refKernels }), f)).toThrow(
      /edited\.safetensors: missing tensor\(s\) for this model: layers\.1\.moe\.experts\.w2/,
    );
  });

  it('rejects a missing expert_bias buffer', () => {
    const f = withChange((m) => m.delete('layers.1.moe.expert_bias'));
    expect(() => loadWeights(Model.build(c.config, { kernels: refKernels }), f)).toThrow(
      /missing tensor\(s\) for this model: layers\.1\.moe\.expert_bias/,
    );
  });

  it('rejects an extra tensor, naming it', () => {
    const f = withChange((m) => m.set('layers.9.attention.wq.weight', { shape: [2], data: new Float32Array(2) }));
    expect(() => loadWeights(Model.build(c.config, { kernels: refKernels }), f)).toThrow(
      /does not have: layers\.9\.attention\.wq\.weight/,
    );
  });

  it('rejects a wrong-shaped tensor, naming it and both shapes', () => {
    const f = withChange((m) => m.set('norm.weight', { shape: [2, 16], data: m.get('norm.weight')!.data }));
    expect(() => loadWeights(Model.build(c.config, { kernels: refKernels }), f)).toThrow(
      /tensor norm\.weight has shape \(2, 16\), the model expects \(32\)/,
    );
  });

  it('round-trips through safetensors', () => {
    const m = Model.build(tinyDsv3(), { seed: 11, kernels: refKernels });
    for (const [, b] of m.moeBuffers) b.expertBias!.set([0.1, -0.1, 0, 0.2, -0.2, 0, 0, 0]);
    const path = join(mkdtempSync(join(tmpdir(), 'moe-w-')), 'w.safetensors');
    saveWeights(m, path);
    const m2 = Model.build(tinyDsv3(), { kernels: refKernels });
    loadWeights(m2, readSafetensors(path));
    for (const n of m.paramNames()) expect(m2.param(n)).toEqual(m.param(n));
    for (const [l, b] of m.moeBuffers) expect(m2.moeBuffers.get(l)!.expertBias).toEqual(b.expertBias);
  });

  it("an EP shard loads its own experts' rows and refuses to save a full state", () => {
    const shard = Model.build(c.config, { experts: { start: 2, count: 2 }, kernels: refKernels });
    loadWeights(shard, c.weights);
    const full = c.weights.get('layers.1.moe.experts.w1')!.data as Float32Array;
    const per = 56 * 32;
    expect(shard.param('layers.1.moe.experts.w1')).toEqual(full.subarray(2 * per, 4 * per));
    expect(shard.unitOf('layers.1.moe.experts.w1').layout.entry('layers.1.moe.experts.w1').shape).toEqual([2, 56, 32]);
    expect(() => stateDict(shard)).toThrow(/EP shard/);
    expect(() => shard.forward(c.batch)).toThrow(/holds experts \[2, 4\) of 4/);
  });
});

describe('init', () => {
  it('follows torchtitan: N(0,1) embedding, per-parameter std with depth scaling, ±3σ output, ones for norms', () => {
    const m = Model.build(resolveModelConfig({ name: 'llama4', flavor: 'debugmodel', args: { n_layers: 4 } }, 64), {
      seed: 7,
      kernels: refKernels,
    });
    const std = (a: Float32Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
    expect(std(m.param('tok_embeddings.weight'))).toBeCloseTo(1, 1);
    expect(std(m.param('layers.0.attention.wq.weight'))).toBeCloseTo(0.02, 3);
    expect(std(m.param('layers.3.attention.wo.weight'))).toBeCloseTo(0.02 / Math.sqrt(8), 3);
    expect(std(m.param('layers.3.moe.experts.w2'))).toBeCloseTo(0.02 / Math.sqrt(8), 3);
    expect(std(m.param('layers.3.moe.router.gate.weight'))).toBeCloseTo(0.02 / Math.sqrt(8), 2);
    const out = m.param('output.weight');
    const s = 256 ** -0.5;
    expect(std(out)).toBeLessThan(s);
    expect(out.reduce((a, v) => Math.max(a, Math.abs(v)), 0)).toBeLessThanOrEqual(Math.fround(3 * s));
    expect(m.param('layers.2.ffn_norm.weight').every((v) => v === 1)).toBe(true);
    expect(m.moeBuffers.get(1)!.expertBias!.every((v) => v === 0)).toBe(true);
  });

  it("is seeded per parameter and per expert: an EP shard initialises the full model's rows", () => {
    const cfg = tinyLlama();
    const full = Model.build(cfg, { seed: 5, kernels: refKernels });
    const again = Model.build(cfg, { seed: 5, kernels: refKernels });
    const other = Model.build(cfg, { seed: 6, kernels: refKernels });
    const shard = Model.build(cfg, { seed: 5, experts: { start: 1, count: 2 }, kernels: refKernels });
    expect(again.param('layers.1.attention.wq.weight')).toEqual(full.param('layers.1.attention.wq.weight'));
    expect(other.param('layers.1.attention.wq.weight')).not.toEqual(full.param('layers.1.attention.wq.weight'));
    const per = full.param('layers.1.moe.experts.w3').length / 4;
    expect(shard.param('layers.1.moe.experts.w3')).toEqual(
      full.param('layers.1.moe.experts.w3').subarray(per, 3 * per),
    );
  });
});

describe('units and memory', () => {
  it('lays parameters out in FSDP units of flat storage, grads with the same layout', () => {
    const alloc = new Allocator();
    const m = Model.build(tinyLlama(), { alloc, kernels: refKernels });
    expect([...m.units.keys()]).toEqual([
      'tok_embeddings',
      'layers.0',
      'layers.1',
      'layers.1.moe.experts',
      'layers.2',
      'layers.3',
      'layers.3.moe.experts',
      'norm_output',
    ]);
    const u = m.units.get('layers.1')!;
    const e = u.layout.entry('layers.1.attention.wk.weight');
    expect(m.param('layers.1.attention.wk.weight').buffer).toBe(u.data.buffer);
    expect(m.param('layers.1.attention.wk.weight').byteOffset).toBe(e.offset * 4);
    expect(m.grad('layers.1.attention.wk.weight').byteOffset).toBe(e.offset * 4);
    expect(
      u.layout.has('layers.1.moe.router.gate.weight') && u.layout.has('layers.1.moe.shared_experts.w1.weight'),
    ).toBe(true);
    expect(u.layout.has('layers.1.moe.experts.w1')).toBe(false);
    const s = alloc.stats();
    const numel = [...m.units.values()].reduce((a, x) => a + x.layout.numel, 0);
    expect(s.live.params).toBe(numel * 4);
    expect(s.live.grads).toBe(numel * 4);
  });

  it("detach/attach swap a unit's storage (FSDP reshard/unshard): views follow, use while detached is an error", () => {
    const m = Model.build(tinyLlama(), { seed: 4, kernels: refKernels });
    const u = m.units.get('layers.0')!;
    const saved = Float32Array.from(u.data);
    const name = 'layers.0.attention.wq.weight';
    const before = Float32Array.from(m.param(name));
    u.detach();
    expect(u.hasData || u.hasGrad).toBe(false);
    expect(() => m.param(name)).toThrow(/unit layers\.0: no parameter storage attached \(the unit is resharded/);
    expect(() => m.forward(batch(50, 1, 12, 0))).toThrow(/no parameter storage attached/);
    m.rt.pool.trim();
    const full = new Float32Array(u.layout.numel + 7); // e.g. an all_gather buffer padded to the shard multiple
    full.set(saved);
    u.attach({ data: full, grad: new Float32Array(u.layout.numel) });
    expect(m.param(name)).toEqual(before);
    expect(m.param(name).buffer).toBe(full.buffer);
    expect(() => u.attach({ data: new Float32Array(3) })).toThrow(/data storage has 3 floats, the layout needs/);
  });

  it('releases every activation after backward and counts them while live', () => {
    const alloc = new Allocator();
    const m = Model.build(tinyDsv3(), { alloc, seed: 1, kernels: refKernels });
    m.forward(batch(50, 2, 12, 0));
    const during = alloc.stats().live.activations;
    expect(during).toBeGreaterThan(0);
    m.backward();
    expect(alloc.stats().live.activations).toBe(0);
    expect(alloc.stats().peak.activations).toBeGreaterThanOrEqual(during);
    // full AC keeps less alive between forward and backward
    m.forward(batch(50, 2, 12, 0), { ac: { mode: 'full' } });
    expect(alloc.stats().live.activations).toBeLessThan(during);
    m.backward();
    expect(m.rt.pool.liveCount).toBe(0);
    // evaluation: forward then discard
    m.forward(batch(50, 2, 12, 0), { ac: { mode: 'selective', every: 2 } });
    m.discard();
    expect(m.rt.pool.liveCount).toBe(0);
    expect(alloc.stats().live.activations).toBe(0);
  });
});

describe('input validation', () => {
  const m = Model.build(tinyLlama(), { seed: 1, kernels: refKernels });
  it('rejects a token id outside the vocabulary', () => {
    const b = batch(50, 1, 12, 0);
    b.tokens[4] = 50;
    expect(() => m.forward(b)).toThrow(/token id 50 at position 4 is outside the vocabulary \[0, 50\)/);
    b.tokens[4] = -1;
    expect(() => m.forward(b)).toThrow(/token id -1/);
  });
  it('rejects a bad label, a wrong batch size, a sequence longer than max_seq_len, all-ignored labels', () => {
    const b = batch(50, 1, 12, 0);
    b.labels[2] = 77;
    expect(() => m.forward(b)).toThrow(/label 77 at position 2/);
    expect(() => m.forward({ ...batch(50, 1, 12, 0), B: 2 })).toThrow(/B·S = 2·12 = 24/);
    expect(() => m.forward(batch(50, 1, 16, 0))).toThrow(
      /sequence length 16 exceeds the RoPE table \(max_seq_len = 12\)/,
    );
    const ign = batch(50, 1, 12, 0);
    ign.labels.fill(-100);
    expect(() => m.forward(ign)).toThrow(/global valid token count must be > 0/);
    expect(m.rt.pool.liveCount).toBe(0);
  });
  it('rejects unsupported attention masks when building a runnable model', () => {
    const cfg = resolveModelConfig({ name: 'deepseek_v3', flavor: '16B' }, 64);
    expect(() => Model.build(cfg, { kernels: refKernels })).toThrow(
      /attn_mask_type = "block_causal" is not supported.*Set attn_mask_type = "causal"/,
    );
  });
});
