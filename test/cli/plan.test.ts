// `moe-actors plan`: the planner's decisions as printed for a job config, and a forced strategy the backend cannot
// run refused with the planner's reason (exit code 1) — before anything would start.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, PARITY, show } from './helpers.ts';

describe('moe-actors plan', () => {
  it('prints the mesh, memory, strategies with reasons and bytes per group for the debug job on 4 ranks', async () => {
    const r = await cli(['plan', '--ranks', '4']);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toContain('moe-actors plan: the embedded debug job (configs/debug_ep4.toml), 4 ranks');
    expect(r.stdout).toContain('mesh: world 4 = dp_replicate 1 × dp_shard 4 (ep 4');
    expect(r.stdout).toMatch(/^EP dispatch: a2a — fewest predicted bytes per MoE layer/m);
    expect(r.stdout).toMatch(/^gradient reduction: sum — gradient_divide_factor = 1/m);
    expect(r.stdout).toMatch(
      /^per rank memory \(bytes\):\n {2}total [\d.]+ [KMG]iB = param shards [\d.]+ [KMG]iB \+ grad shards/m,
    );
    expect(r.stdout).toMatch(
      /^bytes per step per group \(this rank, sent \+ received; params float32: all-gathers and EP rows at 4 bytes, gradient reduce_scatters at 4\):\n {2}fsdp +[\d.]+ [KMG]iB/m,
    );
    expect(r.stdout).toMatch(/^ {2}ep +[\d.]+ [KMG]iB$/m);
  });

  it('on a profile without all_to_all, auto picks an all_gather strategy and says why a2a was ruled out', async () => {
    const r = await cli(['plan', '--ranks', '4', '--comm.profile', 'xccl-2025']);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toMatch(/^EP dispatch: allgather-(padded|rs) — .*; ruled out: a2a \(a2a needs all_to_all/m);
    expect(r.stdout).toMatch(/^ {2}a2a +cannot run: /m);
  });

  it('refuses a forced dispatch the backend cannot run, naming the alternatives', async () => {
    const r = await cli(['plan', '--ranks', '4', '--comm.profile', 'xccl-2025', '--comm.dispatch', 'a2a']);
    expect(r.code, show(r)).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim()).toMatch(
      /^moe-actors: \[comm\] dispatch = "a2a" cannot run on backend threads\/xccl-2025: .*Use "allgather-padded" or "allgather-rs", or dispatch = "auto"\.$/,
    );
  });

  it('plans a parity fixture config with [parallelism] overrides', async () => {
    const r = await cli([
      'plan',
      '--config',
      join(PARITY, 'dsv3_groups_softmax_train', 'config.toml'),
      '--ranks',
      '2',
      '--parallelism.expert_parallel_degree',
      '2',
      '--comm.dispatch',
      'allgather-rs',
    ]);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toContain('EP dispatch: allgather-rs — forced by [comm] dispatch');
  });

  it('clear errors for a bad --ranks and a missing config', async () => {
    const a = await cli(['plan', '--ranks', '0']);
    expect(a.code, show(a)).toBe(1);
    expect(a.stderr).toContain('--ranks must be a positive integer (got "0")');
    const b = await cli(['plan', '--config', 'nope.toml']);
    expect(b.code, show(b)).toBe(1);
    expect(b.stderr).toContain('--config nope.toml: no such file');
  });
});
