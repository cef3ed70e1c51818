// MOE_ACTORS_KERNEL_TIMES: a 4-rank threads training writes one tally per rank thread (plus the main thread's), and
// `npm run kernel-times` prints them per thread and averaged over the ranks; without the variable nothing is timed.
import { afterAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describeChild, runChild, runTrainCli, TINY, tmpRoot } from '../runtime/helpers.ts';
import { getKernels } from '../../src/tensor/kernels.ts';
import type { KernelTally } from '../../src/tensor/kernel-times.ts';

const root = tmpRoot('kernel-times');
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('MOE_ACTORS_KERNEL_TIMES', () => {
  it('tallies every rank thread’s kernels and the summary prints them', { timeout: 90_000 }, async () => {
    const dir = join(root, 'times');
    const args = ['--config', TINY, '--job.dump_folder', root, '--job.run_name', 'kt', '--transport', 'threads'];
    const r = await runTrainCli([...args, '--training.steps', '3', '--trace.enable', 'false'], {
      timeoutMs: 60_000,
      env: { MOE_ACTORS_KERNEL_TIMES: dir },
    });
    expect(r.code, describeChild(r)).toBe(0);
    const files = readdirSync(dir).filter((f) => /^kernels-\d+-\d+\.json$/.test(f));
    const ranks = files.filter((f) => !f.endsWith('-0.json'));
    expect(ranks.length, files.join(', ')).toBe(4);
    for (const f of ranks) {
      const t = JSON.parse(readFileSync(join(dir, f), 'utf8')) as KernelTally;
      const mm = Object.entries(t).filter(([n]) => /^sgemm [NT]{2} \d+×\d+×\d+$/.test(n));
      expect(mm.length, f).toBeGreaterThan(0);
      for (const [, e] of mm) expect(e.flops).toBeGreaterThan(0);
      expect(t.adamw?.calls, `${f}: the optimizer ran`).toBeGreaterThan(0);
      expect(Object.values(t).every((e) => e.ms >= 0 && e.calls > 0)).toBe(true);
    }
    const s = await runChild(process.execPath, ['--import', 'tsx', 'scripts/kernel-times.ts', dir, '--steps', '3'], {
      timeoutMs: 30_000,
    });
    expect(s.code, describeChild(s)).toBe(0);
    expect(s.stdout).toMatch(/mean over the 4 rank thread\(s\)/);
    expect(s.stdout).toMatch(/adamw +[\d.]+ ms\/step/);
    const missing = await runChild(
      process.execPath,
      ['--import', 'tsx', 'scripts/kernel-times.ts', join(root, 'none')],
      {
        timeoutMs: 30_000,
      },
    );
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/run with MOE_ACTORS_KERNEL_TIMES=/);
  });

  it('is off without the variable: the kernels are the loader’s own object', () => {
    expect(process.env.MOE_ACTORS_KERNEL_TIMES).toBeUndefined();
    expect(getKernels().sgemm).toBe(getKernels().sgemm);
    expect(getKernels().impl).toBe('native');
  });
});
