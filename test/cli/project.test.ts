// `moe-actors project`: text and JSON for a report config on aurora-pvc, the same memory line as plan.txt of a real
// run of the same config, and clear errors for bad options.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, show } from './helpers.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('moe-actors project', () => {
  it('prints memory by category, bytes per group, time per step, TPS, MFU and one assumption per line', async () => {
    const r = await cli(['project', '--config', 'configs/deepseek_v3_1b_ep12.toml', '--system', 'aurora-pvc']);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toContain('moe-actors project: configs/deepseek_v3_1b_ep12.toml, 12 ranks on aurora-pvc');
    expect(r.stdout).toMatch(/^memory per rank: [\d.]+ GiB of 64 GiB$/m);
    expect(r.stdout).toMatch(
      /^ {2}total [\d.]+ GiB = param shards [\d.]+ MiB \+ .* EP buffers [\d.]+ [MG]iB \+ allocator .*\(torchtitan, bfloat16 compute, Rmax 1.25, allocator ×1.25\)$/m,
    );
    expect(r.stdout).toMatch(/^ {2}ep +[\d.]+ MiB \([\d.]+ MiB on the wire\)$/m);
    expect(r.stdout).toMatch(
      /^time per step: [\d.]+ s = matmul [\d.]+ \+ attention .* EP comm [\d.]+ \+ exposed FSDP comm [\d.]+$/m,
    );
    expect(r.stdout).toMatch(/^TPS per rank: \d+ {3}MFU: [\d.]+% {3}\(EP dispatch allgather-padded\)$/m);
    const assumptions = r.stdout.split('assumptions:\n')[1]!.trimEnd().split('\n');
    expect(assumptions.length).toBeGreaterThanOrEqual(8);
    for (const a of assumptions) expect(a).toMatch(/^ {2}- \S/);
  });

  it('--format json: one object with the keys scripts read, consistent with each other', async () => {
    const r = await cli([
      'project',
      '--config',
      'configs/llama4_large_noep.toml',
      '--system',
      'aurora-pvc',
      '--format',
      'json',
      '--rmax',
      '1.5',
    ]);
    expect(r.code, show(r)).toBe(0);
    const j = JSON.parse(r.stdout) as Record<string, unknown> & {
      memory_by_category: Record<string, number>;
      bytes_per_step_per_group: Record<string, number>;
    };
    for (const k of [
      'memory_gib_per_rank',
      'memory_by_category',
      'bytes_per_step_per_group',
      'step_seconds',
      'tps_per_rank',
      'mfu',
    ])
      expect(j, k).toHaveProperty(k);
    const sum = Object.values(j.memory_by_category).reduce((a, b) => a + b, 0);
    expect(sum).toBeCloseTo(j.memory_gib_per_rank as number, 9);
    expect(j.tps_per_rank as number).toBeCloseTo((2 * 512) / (j.step_seconds as number), 6);
    expect(j.mfu as number).toBeCloseTo(((j.tps_per_rank as number) * (j.flops_per_token as number)) / 298.2016e12, 9);
    expect(j.bytes_per_step_per_group.fsdp).toBeGreaterThan(0);
    expect((j.assumptions as string[]).some((a) => a.startsWith('routing imbalance Rmax = 1.5'))).toBe(true);
  });

  it('plan.txt of a run and project --system local print the same memory; every group moves the projected bytes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moe-project-'));
    dirs.push(dir);
    const args = [
      '--training.steps',
      '1',
      '--training.seq_len',
      '32',
      '--training.local_batch_size',
      '1',
      '--comm.transport',
      'inproc',
      '--comm.ranks',
      '2',
      '--parallelism.data_parallel_shard_degree',
      '2',
      '--parallelism.expert_parallel_degree',
      '2',
      '--debug.moe_force_load_balance',
      'true',
    ];
    const t = await cli(['train', ...args, '--job.dump_folder', dir, '--job.run_name', 'r'], { timeoutMs: 60_000 });
    expect(t.code, show(t)).toBe(0);
    const planLine = readFileSync(join(dir, 'r', 'plan.txt'), 'utf8')
      .split('\n')
      .find((l) => l.startsWith('  total '));
    const p = await cli(['project', ...args, '--system', 'local']);
    expect(p.code, show(p)).toBe(0);
    const projLine = p.stdout.split('\n').find((l) => l.startsWith('  total '));
    expect(planLine).toBeDefined();
    expect(projLine).toBe(planLine);
    // Round-robin routing makes every rank's EP rows the mean, so each rank's counters equal the projection exactly
    // (op-level SAC: the recompute re-issues the forward dispatch, counts included).
    const j = await cli(['project', ...args, '--system', 'local', '--format', 'json']);
    const proj = JSON.parse(j.stdout) as {
      bytes_per_step_per_group: Record<string, number>;
      scalar_bytes_per_step_per_group: Record<string, number>;
    };
    const want: Record<string, number> = { ...proj.bytes_per_step_per_group };
    for (const [g, b] of Object.entries(proj.scalar_bytes_per_step_per_group)) want[g] = (want[g] ?? 0) + b;
    expect(Object.keys(want).sort()).toEqual(['batch', 'ep', 'fsdp', 'fsdp_reduce', 'loss']);
    const recs = readFileSync(join(dir, 'r', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, number>);
    expect(recs.length).toBe(2);
    for (const r of recs)
      for (const [g, b] of Object.entries(want)) expect(r[`comm/${g}(bytes)`], `${g} rank ${r.rank}`).toBe(b);
  });

  it('--system takes a path to a system file; its allocator factor changes only the allocator category', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moe-system-'));
    dirs.push(dir);
    const path = join(dir, 'mine.toml');
    writeFileSync(
      path,
      readFileSync('configs/systems/aurora-pvc.toml', 'utf8').replace(
        /^allocator_factor = .*$/m,
        'allocator_factor = 1.5',
      ),
    );
    const args = ['project', '--config', 'configs/llama4_medium_ep12.toml', '--format', 'json'];
    const a = await cli([...args, '--system', 'aurora-pvc']);
    const b = await cli([...args, '--system', path]);
    expect(a.code, show(a)).toBe(0);
    expect(b.code, show(b)).toBe(0);
    const ja = JSON.parse(a.stdout) as {
      memory_by_category: Record<string, number>;
      wire_bytes_per_step_per_group: Record<string, number>;
      bytes_per_step_per_group: Record<string, number>;
    };
    const jb = JSON.parse(b.stdout) as typeof ja;
    expect(jb.memory_by_category.allocator).toBeCloseTo(2 * ja.memory_by_category.allocator!, 9);
    expect(jb.memory_by_category.activations).toBe(ja.memory_by_category.activations);
    // bf16 on Aurora: EP rows travel at half the byte model's fp32 count, gradients are reduced in fp32; eager
    // torchtitan's padded all_gather runs forward only (the EP graph cut), --torch-compile forward and backward.
    expect(ja.wire_bytes_per_step_per_group.ep).toBe(ja.bytes_per_step_per_group.ep! / 4);
    const c = await cli([...args, '--system', 'aurora-pvc', '--torch-compile']);
    expect(c.code, show(c)).toBe(0);
    const jc = JSON.parse(c.stdout) as typeof ja;
    expect(jc.wire_bytes_per_step_per_group.ep).toBe(jc.bytes_per_step_per_group.ep! / 2);
    expect(jc.memory_by_category.ep_buffers).toBeGreaterThan(ja.memory_by_category.ep_buffers!);
    expect(ja.wire_bytes_per_step_per_group.fsdp_reduce).toBe(ja.bytes_per_step_per_group.fsdp_reduce);
  });

  it('bad options fail with the cause and the fix, and print nothing on stdout', async () => {
    const a = await cli(['project', '--system', 'nowhere']);
    expect(a.code, show(a)).toBe(1);
    expect(a.stdout).toBe('');
    expect(a.stderr).toContain('--system nowhere: no bundled system of that name; use one of aurora-pvc, local');
    const b = await cli(['project', '--format', 'yaml']);
    expect(b.code, show(b)).toBe(1);
    expect(b.stderr).toContain('--format must be "text" or "json" (got "yaml")');
    const c = await cli(['project', '--rmax', '0.5']);
    expect(c.code, show(c)).toBe(1);
    expect(c.stderr).toContain('--rmax must be a number ≥ 1');
    const d = await cli(['project', '--compute-dtype', 'fp8']);
    expect(d.code, show(d)).toBe(1);
    expect(d.stderr).toContain('--compute-dtype must be bf16 or fp32 (got "fp8")');
  });
});
