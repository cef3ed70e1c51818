// A rank that fails in the middle of an EP dispatch on the ccl transport ends the whole job within the timeout,
// and the survivor says where it waited: the mpi transport's failure rule (fault note, MPI_Abort) holds with
// oneCCL carrying the collective. A SIGKILLed rank cannot send a note: the job still ends, well before its
// deadline, and does not pass for success.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { spawnMpi } from '../../src/comm/mpi/spawn.ts';
import { cclSkip } from './ccl-skip.ts';
import type { EpKillArgs } from './programs/ep-kill.ts';

const entry = { module: fileURLToPath(new URL('./programs/ep-kill.ts', import.meta.url)) };
const tmp = mkdtempSync(join(tmpdir(), 'moe-ccl-faults-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(cclSkip('test/comm/ccl-faults.test.ts (a rank failing mid-dispatch)'))('ccl transport: a rank fails mid-dispatch', () => {
  it('throws with its all_to_all_v in flight: the job ends, the survivor reports the dispatch it waited in', { timeout: 90_000 }, async () => {
    const timeoutMs = 20_000;
    const res = await spawnMpi<number>({ n: 2, transport: 'ccl', entry, args: { mode: 'throw', victim: 1, atIter: 3, iters: 10 } satisfies EpKillArgs, world: { timeoutMs, dumpDir: join(tmp, 'throw') }, jobTimeoutMs: 60_000 });
    expect(res.killed).toBe(false);
    expect(res.ms).toBeLessThan(timeoutMs);
    expect(res.exitCode).not.toBe(0);
    const r1 = res.outcomes[1]!;
    const r0 = res.outcomes[0]!;
    expect(r1.ok).toBe(false);
    expect(r0.ok).toBe(false);
    expect((r1 as { error: string }).error).toMatch(/injected failure on rank 1 in dispatch 3/);
    expect((r0 as { error: string }).error).toMatch(/\[peer-dead\]: rank 1 reported: rank 1 failed: Error: injected failure.*all_to_all_v #[3-5] on group ep/);
    expect(res.diagnosis).toMatch(/^first failure: rank 1: Error: injected failure/);
  });

  it('SIGKILL with its all_to_all_v in flight: the job ends long before its deadline and does not pass for success', { timeout: 90_000 }, async () => {
    const res = await spawnMpi<number>({ n: 2, transport: 'ccl', entry, args: { mode: 'sigkill', victim: 1, atIter: 3, iters: 10 } satisfies EpKillArgs, world: { timeoutMs: 20_000, dumpDir: join(tmp, 'kill') }, jobTimeoutMs: 60_000 });
    expect(res.killed).toBe(false);
    expect(res.ms).toBeLessThan(25_000);
    expect(res.exitCode).not.toBe(0);
    expect(res.outcomes.some((o) => !o.ok)).toBe(true);
    console.info(`sigkill mid-dispatch: ended after ${res.ms.toFixed(0)} ms, exit ${res.exitCode}; rank 0: ${res.outcomes[0]!.ok ? 'ok' : (res.outcomes[0] as { error: string }).error.split('\n', 1)[0]}`);
  });
});
