// The projection model (src/protocols/projection*.ts) against the Aurora report's tables: the orders the report
// shows within each table, the one fitted factor matching the system file, the memory model's categories moving
// the way the stack's code says, and docs/projection.md being what its generator writes.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadJobConfig } from '../../src/train/job-config.ts';
import { planInputOf } from '../../src/train/plan-job.ts';
import { loadSystem } from '../../src/train/system-file.ts';
import { project } from '../../src/protocols/projection.ts';
import { parseSystem, SystemError } from '../../src/protocols/system.ts';
import { REPORT_ROWS, TABLES } from '../../scripts/projection/report-rows.ts';
import { auroraSystem, fitOpOverhead, projectRow } from '../../scripts/projection/rows-projection.ts';
import { DOC, render } from '../../scripts/projection/generate.ts';

const aurora = auroraSystem();
const projected = new Map(REPORT_ROWS.map((r) => [r.id, projectRow(r, aurora)]));
const mem = (id: string) => projected.get(id)!.plan.memory.total;
const tps = (id: string) => projected.get(id)!.tpsPerRank;

describe('projection against the Aurora report', () => {
  it('DeepSeek-V3 1B: EP=12 holds more memory per rank than no EP (padded all_gather buffers), as the report', () => {
    expect(mem('dsv3_ep12_fw')).toBeGreaterThan(1.5 * mem('dsv3_noep_fw'));
  });

  it('Llama4 large: EP=12 holds less memory per rank than no EP (no unsharded 12-expert block), as the report', () => {
    expect(mem('large_ep12')).toBeLessThan(0.8 * mem('large_noep'));
    expect(mem('real_ep12')).toBeLessThan(mem('real_noep'));
  });

  it('TPS is in the report’s order for every pair of rows within each table', () => {
    for (const t of Object.values(TABLES)) {
      const rows = REPORT_ROWS.filter((r) => r.table === t);
      for (const a of rows) {
        for (const b of rows) {
          if (a.tps <= b.tps || (a.config === b.config && a.overrides.join() === b.overrides.join())) continue;
          expect(tps(a.id), `${t}: ${a.label} (${a.tps}) above ${b.label} (${b.tps})`).toBeGreaterThan(tps(b.id));
        }
      }
    }
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
    const act = (mode: string[]) =>
      project(input('llama4_large_noep.toml', mode), { system: aurora }).plan.memory.bytes.activations;
    const none = act(['--activation_checkpoint.mode', 'none']);
    const op = act([]);
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
