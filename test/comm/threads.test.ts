// The threads transport: real worker threads exchanging through SharedArrayBuffer arenas. Conformance at every
// size 1–8 (bitwise equal to the rank-order reference), the chunked path, a loop that keeps turning during a wait,
// the control surface, and failures — a worker terminated mid-run, process.exit, a throw, a hang, a desync — each
// ending within its timeout with a diagnosis that names the rank responsible.

import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { LaunchResult } from '../../src/comm/launch.ts';
import { launch } from '../../src/comm/launch.ts';
import { startThreads } from '../../src/comm/threads/launch.ts';
import type { ConformanceArgs, ConformanceSummary } from './programs/conformance.ts';
import type { FaultArgs } from './programs/threads-faults.ts';

const program = (name: string) => ({ module: fileURLToPath(new URL(`./programs/${name}.ts`, import.meta.url)) });
const CONFORMANCE = program('conformance');
const FAULTS = program('threads-faults');

function failures(res: LaunchResult<unknown>): string {
  return res.outcomes
    .filter((o) => !o.ok)
    .map((o) => `rank ${o.rank}: ${(o as { error: string }).error}`)
    .join('\n');
}

function errorOf(res: LaunchResult<unknown>, rank: number): string {
  const o = res.outcomes[rank]!;
  if (o.ok) throw new Error(`rank ${rank} succeeded, a failure was expected`);
  return o.error;
}

describe('threads transport: conformance', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8])('passes the conformance program bit-exactly on %i ranks', async (size) => {
    const res = await launch<ConformanceArgs, ConformanceSummary>(
      { transport: 'threads', size, timeoutMs: 10_000 },
      CONFORMANCE,
      { seed: 7 },
    );
    expect(failures(res)).toBe('');
    expect(res.outcomes).toHaveLength(size);
    for (const o of res.outcomes) if (o.ok) expect(o.value.backend).toBe('threads/full');
    // Every collective of the suite ran (checks is the same count whatever the size, give or take the broadcasts).
    expect(Math.min(...res.outcomes.map((o) => (o.ok ? o.value.checks : 0)))).toBeGreaterThan(290);
  });

  it('cuts calls larger than a slot into rounds (64-byte slots, SharedArrayBuffer inputs, xccl-2025 profile)', async () => {
    const res = await startThreads<ConformanceArgs, ConformanceSummary>(
      { transport: 'threads', size: 3, timeoutMs: 10_000, slotBytes: 64, profile: 'xccl-2025' },
      CONFORMANCE,
      { seed: 11, shared: true },
    ).result;
    expect(failures(res)).toBe('');
    // The profile denies all_to_all and premul_sum: those calls must have been rejected as 'unsupported'.
    for (const o of res.outcomes) if (o.ok) expect(o.value.unsupported).toBeGreaterThan(0);
  });

  it('keeps the event loop turning while a rank waits (timers fire during the wait)', async () => {
    const res = await launch<{ lateMs: number }, { ticks: number; waitedMs: number }>(
      { transport: 'threads', size: 2, timeoutMs: 5000 },
      program('threads-loop'),
      {
        lateMs: 300,
      },
    );
    expect(failures(res)).toBe('');
    const r0 = res.outcomes[0]!;
    if (!r0.ok) throw new Error('unreachable');
    expect(r0.value.waitedMs).toBeGreaterThan(200);
    // A 10 ms interval over ≥ 200 ms of waiting: a blocked loop would give 0.
    expect(r0.value.ticks).toBeGreaterThanOrEqual(8);
  });
});

/** 3 ranks; rank 1 sleeps outside any collective from its 3rd world all_gather on, which the others wait in. */
function hangingWorld(signal?: AbortSignal) {
  return startThreads<FaultArgs, unknown>(
    { transport: 'threads', size: 3, timeoutMs: 30_000, drainMs: 1000, signal },
    FAULTS,
    { mode: 'hang', victim: 1, atIter: 2, iters: 10 },
  );
}

describe('threads transport: control surface', () => {
  it('reports who a waiting rank waits for, serves flight dumps, and stops ranks on request', async () => {
    const world = hangingWorld();
    await world.ready;
    // Rank 0 passes through short waits on its way; poll until it sits in the call rank 1 never joins.
    let status = await world.status(0);
    // Rank 2 may not have arrived yet when rank 0 first shows #3: wait until only rank 1 is missing.
    const settledOn = (st: typeof status) => st?.pending[0]?.seq === 3 && st.pending[0].waitingFor.join() === '1';
    for (let i = 0; i < 200 && !settledOn(status); i++) {
      await new Promise((r) => setTimeout(r, 20));
      status = await world.status(0);
    }
    expect(status?.pending).toEqual([
      expect.objectContaining({ group: 'world', op: 'all_gather', seq: 3, waitingFor: [1] }),
    ]);
    const dumps = await world.dumps('test');
    expect(dumps[2]?.groups[0]).toMatchObject({ group: 'world', lastEnqueued: 3, lastCompleted: 2 });
    expect(dumps[1]?.groups[0]).toMatchObject({ group: 'world', lastCompleted: 2 });
    const t0 = performance.now();
    await world.stop('test is done');
    const res = await world.result;
    expect(performance.now() - t0).toBeLessThan(5000);
    // Rank 0 is stopped itself, or wakes first to find its group unusable because another rank was stopped: both are
    // the stop taking effect.
    expect(errorOf(res, 0)).toMatch(/\[aborted\].*(stopped \(test is done\)|world rank [12] was stopped)/);
    // Rank 1 sleeps outside any collective, so only the launcher's drain ends it.
    expect(errorOf(res, 1)).toMatch(/stopped by the launcher/);
  });
});

describe('threads transport: stopped from outside', () => {
  it('an aborted launch signal stops every rank with its reason', async () => {
    const ac = new AbortController();
    const world = hangingWorld(ac.signal);
    await world.ready;
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    ac.abort('interrupted by the test');
    const res = await world.result;
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(res.outcomes.every((o) => !o.ok)).toBe(true);
    expect(errorOf(res, 0)).toMatch(/\[aborted\].*(stopped \(interrupted by the test\)|world rank [12] was stopped)/);
  });
});

describe('threads transport: failures end every rank within its timeout, with a diagnosis', () => {
  it('a worker terminated mid-run: the others fail at once naming it', async () => {
    const timeoutMs = 5000;
    const world = startThreads<FaultArgs, unknown>({ transport: 'threads', size: 4, timeoutMs }, FAULTS, {
      mode: 'none',
      victim: -1,
      atIter: 0,
      iters: 1_000_000,
      pauseMs: 2,
    });
    await world.ready;
    await new Promise((r) => setTimeout(r, 300));
    const t0 = performance.now();
    await world.terminate(1);
    const res = await world.result;
    expect(performance.now() - t0).toBeLessThan(timeoutMs);
    expect(errorOf(res, 1)).toMatch(/died: its worker exited with code 1/);
    // A survivor either wakes in its poisoned wait (peer-dead) or is stopped by the launcher first, which reacted
    // to the same death; both name the dead rank.
    for (const r of [0, 2, 3])
      expect(errorOf(res, r)).toMatch(
        /\[peer-dead\].*world rank 1.*died|world rank 1 died|\[aborted\].*stopped \(rank 1 died\)/,
      );
    expect(res.diagnosis).toMatch(/^first failure: rank 1 died/);
    expect(res.diagnosis).toMatch(/missing ranks: \{1\}/);
  });

  it('process.exit in a rank before a collective', async () => {
    const t0 = performance.now();
    const res = await launch<FaultArgs, unknown>({ transport: 'threads', size: 3, timeoutMs: 5000 }, FAULTS, {
      mode: 'exit',
      victim: 1,
      atIter: 3,
      iters: 10,
    });
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(errorOf(res, 1)).toMatch(/exited with code 3/);
    expect(errorOf(res, 0)).toMatch(/all_gather #4 for rank 1 \(world rank 1\) to arrive, but it died/);
    expect(res.diagnosis).toMatch(/rank 1 is without a dump .*last completed all_gather #3 on group world/);
  });

  it('a rank that throws: its error is the root cause, the others name it', async () => {
    const res = await launch<FaultArgs, unknown>({ transport: 'threads', size: 3, timeoutMs: 5000 }, FAULTS, {
      mode: 'throw',
      victim: 2,
      atIter: 1,
      iters: 10,
    });
    expect(errorOf(res, 2)).toMatch(/injected failure on rank 2/);
    expect(errorOf(res, 0)).toMatch(/\[peer-dead\].*rank 2 .*failed \(its program threw\)/);
    expect(res.diagnosis).toMatch(/^first failure: rank 2 failed: Error: injected failure/);
  });

  it('a rank that stops calling collectives: the others time out, saying whom they waited for', async () => {
    const timeoutMs = 1500;
    const t0 = performance.now();
    const res = await startThreads<FaultArgs, unknown>(
      { transport: 'threads', size: 3, timeoutMs, drainMs: 500 },
      FAULTS,
      {
        mode: 'hang',
        victim: 1,
        atIter: 2,
        iters: 10,
      },
    ).result;
    expect(performance.now() - t0).toBeLessThan(timeoutMs + 5000);
    expect(errorOf(res, 0)).toMatch(/\[timeout\]|timed out/);
    expect(res.diagnosis).toMatch(/waited 1500 ms in all_gather #3 for rank 1 \(world 1; last entered all_gather #2\)/);
    expect(res.diagnosis).toMatch(/missing ranks: \{1\}/);
  });

  it('ranks that call different collectives at the same sequence number get a mismatch naming both', async () => {
    const res = await launch<FaultArgs, unknown>({ transport: 'threads', size: 2, timeoutMs: 5000 }, FAULTS, {
      mode: 'mismatch',
      victim: 1,
      atIter: 0,
      iters: 3,
    });
    expect(errorOf(res, 0)).toMatch(
      /\[mismatch\].*rank 0 \(world 0\) is in all_gather #1 .*rank 1 \(world 1\) is in all_reduce #1/,
    );
    expect(errorOf(res, 1)).toMatch(/\[mismatch\]/);
  });
});
