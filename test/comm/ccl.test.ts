// The ccl transport with real processes: `mpiexec.mpich -n N node src/comm/mpi/run.mjs --transport ccl …`, oneCCL
// carrying every collective (MPI only bootstraps it and splits groups). The conformance program at 2 and 4 ranks,
// the same program failing over a planted all_to_all_v bug (as the inproc mutants), and the refusal, naming cause
// and fix, where oneCCL was not found at build time.

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { cclAvailability } from '../../src/comm/ccl/native.ts';
import { spawnMpi, type SpawnMpiResult } from '../../src/comm/mpi/spawn.ts';
import { cclSkip } from './ccl-skip.ts';
import type { ConformanceArgs, ConformanceSummary } from './programs/conformance.ts';

const program = (name: string) => ({ module: fileURLToPath(new URL(`./programs/${name}.ts`, import.meta.url)) });
const RUN = fileURLToPath(new URL('../../src/comm/mpi/run.mjs', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'moe-ccl-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const skip = cclSkip('test/comm/ccl.test.ts (conformance at 2 and 4 ranks)');

function failures(res: SpawnMpiResult<unknown>): string {
  return res.outcomes
    .filter((o) => !o.ok)
    .map((o) => `rank ${o.rank}: ${(o as { error: string }).error}`)
    .join('\n');
}

describe('ccl transport: unavailable', () => {
  const fake = join(tmp, 'no-oneccl');
  mkdirSync(fake, { recursive: true });
  const reason =
    'oneCCL not found ($CCL_ROOT, $MOE_ACTORS_CCL_ROOT and ../shared/oneccl have no include/oneapi/ccl.hpp).\nFix: set CCL_ROOT to a oneCCL install';
  writeFileSync(join(fake, 'UNAVAILABLE'), reason + '\n');

  it('reports the reason recorded at build time, and a rank started anyway exits 2 naming cause and fix', () => {
    const prev = process.env.MOE_ACTORS_CCL_ADDON_DIR;
    process.env.MOE_ACTORS_CCL_ADDON_DIR = fake;
    try {
      expect(cclAvailability()).toEqual({ available: false, addonDir: fake, reason });
    } finally {
      if (prev === undefined) delete process.env.MOE_ACTORS_CCL_ADDON_DIR;
      else process.env.MOE_ACTORS_CCL_ADDON_DIR = prev;
    }
    const r = spawnSync(process.execPath, [RUN, '--transport', 'ccl', '--module', program('mpi-faults').module], {
      env: { ...process.env, MOE_ACTORS_CCL_ADDON_DIR: fake },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('the ccl transport is unavailable: oneCCL not found');
    expect(r.stderr).toContain('Fix: set CCL_ROOT');
  });
});

describe.skipIf(skip)('ccl transport: conformance under mpiexec.mpich', () => {
  it.each([
    [2, 1e-6],
    [4, 1e-6],
  ] as const)('-n %i passes the conformance program (tolerance %s)', async (n, tolerance) => {
    const res = await spawnMpi<ConformanceSummary>({
      n,
      transport: 'ccl',
      entry: program('conformance'),
      args: { seed: 7, tolerance } satisfies ConformanceArgs,
      world: { timeoutMs: 30_000 },
      jobTimeoutMs: 150_000,
    });
    expect(failures(res), res.stderr).toBe('');
    expect(res.exitCode).toBe(0);
    for (const o of res.outcomes) if (o.ok) expect(o.value).toMatchObject({ size: n, backend: 'ccl/full' });
  });

  it('-n 2, a planted bug (all_to_all_v with two sources swapped, after the real oneCCL call): the program fails naming it', async () => {
    const res = await spawnMpi<ConformanceSummary>({
      n: 2,
      transport: 'ccl',
      entry: program('conformance-mutant'),
      args: { seed: 7, tolerance: 1e-6 } satisfies ConformanceArgs,
      world: { timeoutMs: 30_000 },
      jobTimeoutMs: 90_000,
    });
    expect(res.exitCode, res.stderr).not.toBe(0);
    expect(res.killed).toBe(false);
    expect(failures(res)).toMatch(/all_to_all_v (float32|float64|int32) .* on group \w+ .*element \d+ is/);
  });

  it('-n 2: int64 and bf16 (Uint16Array) through the binding: exact int64 sums, bf16 sum/max, gathers in rank order', async () => {
    const res = await spawnMpi<string[]>({
      n: 2,
      transport: 'ccl',
      entry: program('ccl-dtypes'),
      args: null,
      world: { timeoutMs: 30_000 },
      jobTimeoutMs: 90_000,
    });
    expect(failures(res), res.stderr).toBe('');
    for (const o of res.outcomes) if (o.ok) expect(o.value).toHaveLength(6);
  });
});
