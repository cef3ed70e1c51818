// The projection model (src/protocols/projection*.ts) against the Aurora report's tables: the orders the report
// shows within each table, the one fitted factor matching the system file, the memory model's categories moving
// the way the stack's code says, and docs/projection.md being what its generator writes.
import { readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { loadJobConfig } from '../../src/train/job-config.ts';
import { planInputOf } from '../../src/train/plan-job.ts';
import { loadSystem } from '../../src/train/system-file.ts';
import { project } from '../../src/protocols/projection.ts';
import { parseSystem, SystemError } from '../../src/protocols/system.ts';
import { REPORT_ROWS, TABLES } from '../../scripts/projection/report-rows.ts';
import { auroraSystem, fitOpOverhead, projectRow } from '../../scripts/projection/rows-projection.ts';
import { DOC, render } from '../../scripts/projection/generate.ts';
import { blockTraffic } from '../../src/protocols/projection-elementwise.ts';
import type { BlockSpec } from '../../src/models/spec.ts';

const aurora = auroraSystem();
const projected = new Map(REPORT_ROWS.map((r) => [r.id, projectRow(r, aurora)]));
const mem = (id: string) => projected.get(id)!.plan.memory.total;
const tps = (id: string) => projected.get(id)!.tpsPerRank;

describe('projection against the Aurora report', () => {
  it('DeepSeek-V3 1B: EP=12 holds more memory per rank than no EP (compiled: gathered buffers kept), as the report', () => {
    expect(mem('dsv3_ep12_fw')).toBeGreaterThan(1.5 * mem('dsv3_noep_fw'));
  });

  it('the EP graph cut: eager padded all_gather keeps no routed activations and runs no expert backward', () => {
    const r = REPORT_ROWS.find((x) => x.id === 'mfu_ep12_16x2048')!;
    const eager = projectRow(r, aurora);
    const compiled = projectRow({ ...r, torchCompile: true }, aurora);
    expect(eager.plan.memory.bytes.activations).toBeLessThan(compiled.plan.memory.bytes.activations);
    // Compiled: every one of the 9 MoE layers keeps its gathered buffers until backward; eager: one layer's at a time.
    expect(compiled.plan.memory.bytes.ep_buffers / eager.plan.memory.bytes.ep_buffers).toBeCloseTo(9, 6);
    expect(eager.time.flops.matmul).toBeLessThan(compiled.time.flops.matmul);
    expect(eager.wireBytes.ep).toBeCloseTo(compiled.wireBytes.ep! / 2, 0);
    // No-EP rows are the same either way.
    const n = REPORT_ROWS.find((x) => x.id === 'mfu_noep_16x2048')!;
    expect(projectRow({ ...n, torchCompile: true }, aurora).plan.memory.total).toBe(
      projectRow(n, aurora).plan.memory.total,
    );
  });

  it('Llama4 large: EP=12 holds less memory per rank than no EP (no unsharded 12-expert block), as the report', () => {
    expect(mem('large_ep12')).toBeLessThan(0.8 * mem('large_noep'));
    expect(mem('real_ep12')).toBeLessThan(mem('real_noep'));
  });

  it('TPS is in the report’s order for every pair of rows within each table but the one docs/projection.md explains', () => {
    const wrong: string[] = [];
    for (const t of Object.values(TABLES)) {
      const rows = REPORT_ROWS.filter((r) => r.table === t);
      for (const a of rows) {
        for (const b of rows) {
          if (a.tps <= b.tps || (a.config === b.config && a.overrides.join() === b.overrides.join())) continue;
          if (tps(a.id) <= tps(b.id)) wrong.push(`${a.id} > ${b.id}`);
        }
      }
    }
    // The realistic table's dense row is bound by FSDP traffic at the assumed Xe Link rate (docs/projection.md).
    expect(wrong).toEqual(['real_dense > real_ep12']);
  });

  it('the system file holds the op overhead fitted on its one fit row', () => {
    const fitted = fitOpOverhead(aurora);
    expect(Math.abs(fitted / aurora.device.opOverheadS - 1)).toBeLessThan(0.005);
  });

  it('docs/projection.md is what npm run docs:projection writes', () => {
    expect(readFileSync(DOC, 'utf8')).toBe(render());
  });
});

describe('the memory model', () => {
  const input = (config: string, extra: string[] = []) => planInputOf(loadJobConfig(`configs/${config}`, extra), 12);

  it('bf16 compute halves the unsharded copies and activations but not the fp32 shards', () => {
    const bf = project(input('deepseek_v3_1b_noep.toml'), { system: aurora, computeDtype: 'bfloat16' }).plan.memory
      .bytes;
    const fp = project(input('deepseek_v3_1b_noep.toml'), { system: aurora, computeDtype: 'float32' }).plan.memory
      .bytes;
    expect(bf.param_shards).toBe(fp.param_shards);
    expect(bf.optimizer).toBe(fp.optimizer);
    expect(bf.unsharded_params / fp.unsharded_params).toBeCloseTo(0.5, 6);
    expect(bf.activations).toBeLessThan(fp.activations);
  });

  it('the routing imbalance Rmax grows the padded all_gather buffers; AdamW is twice the param shards', () => {
    const a = project(input('deepseek_v3_1b_ep12.toml'), { system: aurora, rmax: 1 }).plan.memory.bytes;
    const b = project(input('deepseek_v3_1b_ep12.toml'), { system: aurora, rmax: 2 }).plan.memory.bytes;
    expect(b.ep_buffers).toBeGreaterThan(1.4 * a.ep_buffers);
    expect(a.optimizer).toBe(2 * a.param_shards);
  });

  it('full AC keeps less than op-SAC, which keeps less than none', () => {
    // 16 × 2048 tokens: activations dominate the peak (torchtitan's grad shards grow only as they shrink).
    const big = ['--training.local_batch_size', '16', '--training.seq_len', '2048'];
    const act = (mode: string[]) =>
      project(input('deepseek_v3_1b_noep.toml', [...big, ...mode]), { system: aurora }).plan.memory.bytes.activations;
    const none = act(['--activation_checkpoint.mode', 'none']);
    const op = act(['--activation_checkpoint.mode', 'selective', '--activation_checkpoint.selective_ac_option', 'op']);
    const full = act(['--activation_checkpoint.mode', 'full']);
    expect(full).toBeLessThan(op);
    expect(op).toBeLessThan(none);
  });

  it('a system file with a wrong or missing field is refused with the field named', () => {
    const local = loadSystem('local');
    expect(local.stack.kind).toBe('moe-actors');
    expect(() => parseSystem({ name: 'x' }, 'x.toml')).toThrow(/missing \[device\] table/);
    expect(() => loadSystem('nope')).toThrow(/no bundled system of that name; use one of aurora-pvc, local/);
    expect(() => parseSystem({ name: 'x', device: { memory_gib: -1 }, links: {}, stack: {} }, 'x.toml')).toThrow(
      SystemError,
    );
  });
});

describe('the time model on a CPU node', () => {
  const local = loadSystem('local');
  const job = planInputOf(
    loadJobConfig('configs/deepseek_v3_1b_noep.toml', [
      '--model.args.dim',
      '256',
      '--model.args.n_layers',
      '2',
      '--parallelism.data_parallel_shard_degree',
      '4',
    ]),
    4,
  );
  const off = { ...local, links: { ...local.links, intra: { ...local.links.intra, onComputeCores: false } } };

  it('collectives copying on the compute cores are compute: shared by the ranks, none overlapped', () => {
    expect(local.links.intra.onComputeCores).toBe(true);
    const on = project(job, { system: local }).time.seconds;
    const apart = project(job, { system: off }).time.seconds;
    expect(on.commExposed).toBe(0);
    // The FSDP reductions join the all_gathers, and every byte goes at a quarter of the node's copy rate.
    expect(on.commCritical).toBeGreaterThan(4 * apart.commCritical - 1e-9);
    expect(on.total).toBeCloseTo(on.matmul + on.attention + on.memoryBound + on.opOverhead + on.commCritical, 12);
  });

  it('copies_on_compute_cores must be a boolean', () => {
    const raw = parseToml(readFileSync('configs/systems/local.toml', 'utf8'));
    (raw.links as Record<string, Record<string, unknown>>).intra!.copies_on_compute_cores = 'yes';
    expect(() => parseSystem(raw, 'x.toml')).toThrow(/\[links.intra\]: copies_on_compute_cores must be true or false/);
  });
});

describe('the element-wise traffic model', () => {
  const gqa = { kind: 'gqa', nHeads: 2, nKvHeads: 1, headDim: 4, useRope: true, scale: 0.5 } as const;
  const block = (ffn: BlockSpec['ffn']): BlockSpec => ({ layerId: 0, attn: gqa, ffn, normEps: 1e-5, initStd: 0.02 });

  it('counts a dense block kernel by kernel: norms, residual adds, RoPE on q and k, SwiGLU', () => {
    // D = 8: two norms 2·2D, two residual adds 2·3D, RoPE (2 + 1 heads)·4 read and written, SwiGLU 3·16.
    expect(blockTraffic(block({ kind: 'dense', hidden: 16 }), 8, 1, 1)).toEqual({
      fwd: 32 + 48 + 24 + 48,
      routedFwd: 0,
      fp32Fwd: 0,
    });
  });

  it("an MoE block's routed traffic grows with K and, under EP, with the busiest rank's Rmax; the rest does not", () => {
    const args = { num_experts: 4, top_k: 2 } as unknown as Extract<BlockSpec['ffn'], { kind: 'moe' }>['args'];
    const moe = block({ kind: 'moe', args, hidden: 16, sharedHidden: 0 });
    const local = blockTraffic(moe, 8, 1, 1.5);
    const ep = blockTraffic(moe, 8, 4, 1.5);
    // Gather 2·K·D, SwiGLU 3·K·H, combine K·D + D.
    expect(local.routedFwd).toBe(2 * 2 * 8 + 3 * 2 * 16 + 2 * 8 + 8);
    expect(ep.routedFwd - 8).toBeCloseTo(1.5 * (local.routedFwd - 8), 9);
    expect(ep.fwd).toBe(local.fwd);
    expect(local.fp32Fwd).toBe(2 * 4 + 2 * 2);
  });
});
