// [model] resolution, flavors, parameter counts and FLOPs against the spec's computed numbers (counted from shapes,
// nothing allocated), and RoPE tables.
import { describe, expect, it } from 'vitest';
import { listFlavors, resolveModelConfig } from '../../src/models/config.ts';
import { buildModelSpec, paramSpecs } from '../../src/models/spec.ts';
import { countParams, flopsPerToken } from '../../src/models/counts.ts';
import { DEEPSEEK_V3_FLAVORS, dsv3SoftmaxScale } from '../../src/models/deepseek-v3/args.ts';
import { LLAMA4_FLAVORS, llama4DenseHidden, llama4ExpertHidden } from '../../src/models/llama4/args.ts';
import { baseFreqs, buildRopeTable, llama4ScaledFreqs, ropeFreqs } from '../../src/models/layers/rope.ts';

const spec = (name: string, flavor: string, seq: number, args?: object) =>
  buildModelSpec(resolveModelConfig({ name, flavor, args }, seq));

describe('[model] resolution', () => {
  it('takes a flavor, overrides fields and nested tables, sets max_seq_len = training.seq_len', () => {
    const r = resolveModelConfig(
      {
        name: 'llama4',
        flavor: 'debugmodel',
        args: { n_layers: 3, moe_args: { top_k: 2 }, rope_scaling_args: { scaling_factor: 8 } },
      },
      512,
    );
    if (r.name !== 'llama4') throw new Error('family');
    expect(r.args.n_layers).toBe(3);
    expect(r.args.dim).toBe(256);
    expect(r.args.moe_args.top_k).toBe(2);
    expect(r.args.moe_args.num_experts).toBe(8); // kept from the flavor
    expect(r.args.rope_scaling_args).toEqual({
      scaling_factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 1,
      original_max_position_embeddings: 8192,
    });
    expect(r.args.max_seq_len).toBe(512);
    // the registry is not mutated by overrides
    expect(LLAMA4_FLAVORS.debugmodel!.n_layers).toBe(6);
    expect(LLAMA4_FLAVORS.debugmodel!.moe_args.top_k).toBe(1);
  });

  it('"custom" is the dataclass defaults; rope_scaling_args absent means none', () => {
    const r = resolveModelConfig({ name: 'llama4', flavor: 'custom', args: { dim: 64, n_heads: 4 } }, 32);
    if (r.name !== 'llama4') throw new Error('family');
    expect(r.args.vocab_size).toBe(202048);
    expect(r.args.rope_scaling_args).toBeNull();
    expect(r.args.moe_args).toMatchObject({
      num_experts: 8,
      top_k: 1,
      score_func: 'sigmoid',
      score_before_experts: true,
    });
    const d = resolveModelConfig({ name: 'deepseek_v3', flavor: 'custom' }, 4096);
    if (d.name !== 'deepseek_v3') throw new Error('family');
    expect(d.args).toMatchObject({
      dim: 2048,
      n_layers: 27,
      inter_dim: 10944,
      kv_lora_rank: 512,
      rope_factor: 40,
      max_seq_len: 4096,
    });
  });

  it('a rope_scaling_args table on a flavor without scaling starts from the defaults', () => {
    const r = resolveModelConfig(
      { name: 'llama4', flavor: '17bx128e', args: { rope_scaling_args: { low_freq_factor: 2 } } },
      8192,
    );
    if (r.name !== 'llama4') throw new Error('family');
    expect(r.args.rope_scaling_args).toEqual({
      scaling_factor: 16,
      low_freq_factor: 2,
      high_freq_factor: 1,
      original_max_position_embeddings: 8192,
    });
  });

  it.each([
    [{ name: 'llama3' }, /model\.name: unknown model "llama3".*valid models are: llama4, deepseek_v3/],
    [{ name: 'llama4', flavor: 'tiny' }, /model\.flavor: unknown llama4 flavor "tiny".*custom, debugmodel/],
    [{ name: 'llama4', args: { dimm: 3 } }, /model\.args\.dimm: unknown field; valid fields are: dim, n_layers/],
    [{ name: 'llama4', args: { dim: '256' } }, /model\.args\.dim: expected an integer, got "256" \(string\)/],
    [{ name: 'llama4', args: { dim: 25.5 } }, /model\.args\.dim: expected an integer, got 25\.5/],
    [
      { name: 'llama4', args: { moe_args: { score_func: 'relu' } } },
      /model\.args\.moe_args\.score_func: expected one of "sigmoid", "softmax", got "relu"/,
    ],
    [
      { name: 'llama4', args: { moe_args: { experts: 4 } } },
      /model\.args\.moe_args\.experts: unknown field; valid fields are: num_experts/,
    ],
    [{ name: 'llama4', args: { depth_init: 1 } }, /model\.args\.depth_init: expected true or false/],
    [
      { name: 'deepseek_v3', args: { rope_scaling_args: {} } },
      /model\.args\.rope_scaling_args: unknown field; valid fields are: max_batch_size/,
    ],
    [{ name: 'llama4', args: { n_heads: 7 } }, /dim=256 must be divisible by n_heads=7/],
    [{ name: 'llama4', args: { moe_args: { top_k: 9 } } }, /top_k must be in \[1, num_experts=8\]/],
    [
      { name: 'deepseek_v3', args: { moe_args: { num_expert_groups: 3, num_limited_groups: 1 } } },
      /num_experts=8 must be divisible by num_expert_groups=3/,
    ],
    [{ name: 'llama4', bogus: 1 }, /model\.bogus: unknown field; valid fields are: name, flavor, args/],
  ])('rejects %j', (section, msg) => {
    expect(() => resolveModelConfig(section, 64)).toThrow(msg);
  });
});

describe('flavors', () => {
  it('registers every spec flavor, the Aurora flavors and a dense twin of every Llama4 flavor', () => {
    const l4 = listFlavors('llama4');
    for (const f of [
      'debugmodel',
      'debugmodel_irope',
      '17bx16e',
      '17bx16e_irope',
      '17bx128e',
      '17bx128e_irope',
      'debugmodel_12_rank',
      'mediummodel_12_rank',
      'largemodel_12_rank',
      'largemodel_dense_equivalent',
    ]) {
      expect(l4).toContain(f);
    }
    for (const f of [
      'debugmodel',
      'debugmodel_12_rank',
      'mediummodel_12_rank',
      'largemodel_12_rank',
      '17bx16e',
      '17bx128e',
      'debugmodel_irope',
    ]) {
      expect(l4).toContain(`${f}_dense`);
      const s = spec('llama4', `${f}_dense`, 512);
      expect(s.blocks.every((b) => b.ffn.kind === 'dense')).toBe(true);
      const base = spec('llama4', f, 512);
      expect(s.dim).toBe(base.dim);
      expect(s.vocabSize).toBe(base.vocabSize);
      expect(countParams(s).sparse).toBe(0);
    }
    expect(listFlavors('deepseek_v3')).toEqual([
      'debugmodel',
      'debugmodel_flex_attn',
      '16B',
      '236B',
      '671B',
      'baseline_model_1b_12rank',
    ]);
  });

  it("Aurora flavors have the report's shapes", () => {
    const med = spec('llama4', 'mediummodel_12_rank', 512);
    expect([med.dim, med.nLayers, med.vocabSize]).toEqual([2304, 24, 32000]);
    expect(med.blocks.map((b) => b.ffn.kind === 'moe')).toEqual(Array.from({ length: 24 }, (_, i) => i % 2 === 1));
    const large = spec('llama4', 'largemodel_12_rank', 512);
    expect(large.blocks[1]!.attn).toMatchObject({ kind: 'gqa', nHeads: 36, nKvHeads: 12, headDim: 128 });
    expect(large.blocks[1]!.ffn).toMatchObject({ kind: 'moe', args: { num_experts: 12 } });
    const dbg = spec('llama4', 'debugmodel_12_rank', 512);
    expect([dbg.dim, dbg.blocks.length]).toEqual([384, 6]);
    const b1 = spec('deepseek_v3', 'baseline_model_1b_12rank', 512);
    expect([b1.dim, b1.nLayers, b1.vocabSize]).toEqual([1024, 10, 50000]);
    expect(b1.blocks.every((b) => b.ffn.kind === 'moe' && b.ffn.args.num_experts === 60)).toBe(true);
    expect(b1.blocks[0]!.attn).toMatchObject({ kind: 'mla', nHeads: 8 });
    const c = countParams(b1);
    expect(c.total).toBeGreaterThan(1.0e9);
    expect(c.total).toBeLessThan(1.2e9);
  });

  it('hidden sizes follow §1.4 (debugmodel 768 / 512, 17B 16384 / 8192)', () => {
    expect(llama4DenseHidden(LLAMA4_FLAVORS.debugmodel!)).toBe(768);
    expect(llama4ExpertHidden(LLAMA4_FLAVORS.debugmodel!)).toBe(512);
    expect(llama4DenseHidden(LLAMA4_FLAVORS['17bx128e']!)).toBe(16384);
    expect(llama4ExpertHidden(LLAMA4_FLAVORS['17bx128e']!)).toBe(8192);
  });
});

describe('parameter counts and FLOPs per token (spec §1.2, §2.2, §6)', () => {
  it.each([
    ['llama4', 'debugmodel', 2048, [15_017_216, 4_394_240, 10_622_976, 6_759_680], 75_161_088],
    ['llama4', 'debugmodel_irope', 2048, [15_017_216, 4_394_240, 10_622_976, 6_759_680], 75_161_088],
    ['llama4', '17bx16e', 8192, [107_769_861_120, 5_089_367_040, 102_680_494_080, 17_172_894_720], 120_989_644_800],
    ['llama4', '17bx128e', 8192, [400_711_848_960, 11_129_164_800, 389_582_684_160, 17_184_691_200], 121_060_423_680],
    ['deepseek_v3', 'debugmodel', 2048, [33_014_016, 23_173_376, 9_840_640, 28_098_816], 542_934_528],
    ['deepseek_v3', '16B', 4096, [15_706_484_224, 858_385_920, 14_848_098_304, 2_661_150_208], 18_105_996_288],
    ['deepseek_v3', '236B', 4096, [235_741_434_880, 10_191_590_400, 225_549_844_480, 21_375_800_320], 185_507_051_520],
    ['deepseek_v3', '671B', 4096, [671_026_404_352, 14_456_871_936, 656_569_532_416, 37_552_282_624], 281_158_232_064],
  ] as const)('%s %s', (name, flavor, seq, [total, dense, sparse, active], flops) => {
    const s = spec(name, flavor, seq);
    const c = countParams(s);
    expect([c.total, c.dense, c.sparse, c.active]).toEqual([total, dense, sparse, active]);
    expect(flopsPerToken(s)).toBe(flops);
  });

  it('the param list carries the NAMES.md shapes (DSV3 debugmodel layer 1)', () => {
    const ps = new Map(paramSpecs(spec('deepseek_v3', 'debugmodel', 2048)).map((p) => [p.name, p.shape]));
    expect(ps.get('layers.1.attention.wq.weight')).toEqual([3072, 256]);
    expect(ps.get('layers.1.attention.wkv_a.weight')).toEqual([576, 256]);
    expect(ps.get('layers.1.attention.wkv_b.weight')).toEqual([4096, 512]);
    expect(ps.get('layers.1.attention.wo.weight')).toEqual([256, 2048]);
    expect(ps.get('layers.1.moe.experts.w2')).toEqual([8, 256, 256]);
    expect(ps.get('layers.0.feed_forward.w1.weight')).toEqual([1024, 256]);
  });
});

describe('RoPE tables', () => {
  it('llama4 debugmodel: frequencies 5, 6, 7 divided by 16 (default scaling args)', () => {
    const b = baseFreqs(16, 500000);
    const s = ropeFreqs(spec('llama4', 'debugmodel', 2048).rope);
    for (let i = 0; i < 8; i++) expect(s[i]).toBe(i >= 5 ? Math.fround(b[i]! / 16) : b[i]);
  });

  it('llama4 17B: frequencies ≥ 35 divided by 16', () => {
    const b = baseFreqs(128, 500000);
    const s = ropeFreqs(spec('llama4', '17bx16e', 8192).rope);
    const divided = [...s].map((v, i) => v !== b[i]);
    expect(divided.indexOf(true)).toBe(35);
    expect(divided.slice(35).every(Boolean)).toBe(true);
  });

  it("three-band scaling matches the fixture's fp32 frequencies exactly", () => {
    // llama4_gqa_ropescale_top1: hd 8, θ 1e4, scaling 8 / low 1 / high 8 / orig 256
    const f = llama4ScaledFreqs(baseFreqs(8, 10000), {
      scaling_factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 8,
      original_max_position_embeddings: 256,
    });
    expect([...f]).toEqual([1, 0.0509295836, 0.00124999997, 0.000125000006].map(Math.fround));
  });

  it('DSV3 YaRN: unchanged up to 10, divided by 40 from 23, blended between (defaults at seq 8192)', () => {
    const s = spec('deepseek_v3', 'debugmodel', 8192);
    const b = baseFreqs(64, 10000);
    const y = ropeFreqs(s.rope);
    for (let i = 0; i <= 10; i++) expect(y[i]).toBe(b[i]);
    for (let i = 23; i < 32; i++) expect(y[i]).toBe(Math.fround(b[i]! / 40));
    for (let i = 11; i < 23; i++) expect(y[i]! < b[i]! && y[i]! > b[i]! / 40).toBe(true);
    expect(dsv3SoftmaxScale({ ...DEEPSEEK_V3_FLAVORS.debugmodel!, max_seq_len: 8192 })).toBeCloseTo(0.114252, 6);
    expect(dsv3SoftmaxScale({ ...DEEPSEEK_V3_FLAVORS.debugmodel!, max_seq_len: 4096 })).toBeCloseTo(192 ** -0.5, 12);
    // no YaRN at or below original_seq_len
    expect([...ropeFreqs(spec('deepseek_v3', 'debugmodel', 4096).rope)]).toEqual([...b]);
  });

  it('YaRN fixture (dsv3_mla_yarn_softmax_top3) frequencies match in fp32', () => {
    const s = spec('deepseek_v3', 'custom', 16, {
      qk_rope_head_dim: 16,
      original_seq_len: 12,
      rope_theta: 10,
      rope_factor: 4,
    });
    const f = ropeFreqs(s.rope);
    expect([...f]).toEqual(
      [1, 0.562420607, 0.281170666, 0.105424128, 0.079056941, 0.0592843406, 0.0444569848, 0.0333380364].map(
        Math.fround,
      ),
    );
  });

  it('angles are fp32(p·f) and tables cover max_seq_len positions', () => {
    const t = buildRopeTable({ kind: 'llama4', dim: 4, theta: 10000, seqLen: 6, scaling: null });
    expect(t.cos.length).toBe(6 * 2);
    expect(t.cos[5 * 2 + 1]).toBe(Math.fround(Math.cos(Math.fround(5 * t.freqs[1]!))));
    expect(t.sin[0]).toBe(0);
  });
});
