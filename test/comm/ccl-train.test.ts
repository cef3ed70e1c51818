// A training run on the ccl transport, started the way a user starts one (scripts/launch-mpi.sh --transport ccl):
// 2 ranks, EP 2 + FSDP 2, 2 steps. The start-up probe runs ('auto' is on for ccl) and plan.txt lists what it
// measured on oneCCL. Also the refusal without the binding, before any rank starts.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cclSkip } from './ccl-skip.ts';

const tmp = mkdtempSync(join(tmpdir(), 'moe-ccl-train-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const ARGS = ['--parallelism.data_parallel_shard_degree', '2', '--parallelism.expert_parallel_degree', '2', '--training.steps', '2', '--training.seq_len', '32', '--training.local_batch_size', '2', '--job.dump_folder', tmp];

describe.skipIf(cclSkip('test/comm/ccl-train.test.ts (a 2-rank training run with the start-up probe)'))('training on the ccl transport', () => {
  it('launch-mpi.sh --transport ccl -n 2: 2 steps, plan.txt carries the probe of oneCCL', { timeout: 180_000 }, () => {
    const r = spawnSync('bash', ['scripts/launch-mpi.sh', '-n', '2', '--config', 'configs/debug_ep4.toml', '--transport', 'ccl', ...ARGS, '--job.run_name', 'ccl2'], {
      encoding: 'utf8',
      timeout: 170_000,
    });
    expect(r.status, r.stderr.slice(-3000)).toBe(0);
    expect(r.stdout).toMatch(/2 ranks on ccl/);
    const plan = readFileSync(join(tmp, 'ccl2', 'plan.txt'), 'utf8');
    expect(plan).toMatch(/backend: ccl\/full/);
    expect(plan).toMatch(/start-up probe on ccl\/full/);
    expect(plan).toMatch(/all_to_all_v\(uneven\)\s+ok/);
    expect(plan).toMatch(/measured: allGather=true .*allToAllV=yes/);
    const steps = readFileSync(join(tmp, 'ccl2', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step as number);
    expect([...new Set(steps)]).toEqual([1, 2]);
  });
});

describe('the ccl transport without its binding', () => {
  it('train --transport ccl is refused before any rank starts, naming cause and fix', () => {
    const fake = join(tmp, 'no-ccl');
    mkdirSync(fake, { recursive: true });
    writeFileSync(join(fake, 'UNAVAILABLE'), 'oneCCL not found ($CCL_ROOT, …).\nFix: set CCL_ROOT to a oneCCL install, then `npm run build:native ccl`.\n');
    const r = spawnSync(process.execPath, ['bin/moe-actors.mjs', 'train', '--transport', 'ccl', ...ARGS], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, MOE_ACTORS_CCL_ADDON_DIR: fake },
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/the ccl transport is unavailable: oneCCL not found/);
    expect(r.stderr).toMatch(/Fix: set CCL_ROOT/);
    expect(existsSync(join(tmp, 'run'))).toBe(false);
  });
});
