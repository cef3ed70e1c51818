// Failures on inproc: a dead rank, a mismatched op, a mismatched size, a rank that skips a collective (desync),
// a rank that exits early, a slow rank within and beyond the timeout, and ops a profile forbids. Every surviving
// rank must fail with the diagnosis, promptly (far inside the timeout), and the launch must never hang.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CollectiveError } from '../../src/comm/errors.ts';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import { formatInspect, readDumps } from '../../src/comm/inspect.ts';
import { launch, type Fault, type LaunchResult, type RankContext, type WorldOptions } from '../../src/comm/launch.ts';
import type { ScenarioArgs, ScenarioResult } from './programs/scenarios.ts';

const entry = { module: fileURLToPath(new URL('./programs/scenarios.ts', import.meta.url)) };
const TIMEOUT = 10_000;

async function run(args: ScenarioArgs, faults: Fault[] = [], world: Partial<WorldOptions> = {}) {
  const t0 = performance.now();
  const res = await launch<ScenarioArgs, ScenarioResult>(
    { transport: 'inproc', size: 4, timeoutMs: TIMEOUT, seed: 1, faults, ...world },
    entry,
    args,
  );
  return { res, ms: performance.now() - t0 };
}

const errors = (res: LaunchResult<unknown>) => res.outcomes.map((o) => (o.ok ? null : o.error));

describe('inproc faults', () => {
  it('a healthy run succeeds on every rank', async () => {
    const { res } = await run({ scenario: 'steps' });
    expect(res.outcomes.every((o) => o.ok)).toBe(true);
    expect(res.diagnosis).toBeUndefined();
  });

  it('an aborted signal stops the run: every rank fails naming the reason, a delayed arrival too, and no timer is left', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort('stopped by the test'), 200);
    // Rank 1 is held back 60 s at world #2: without the stop the run would wait for it.
    const { res, ms } = await run({ scenario: 'steps' }, [{ kind: 'delay', rank: 1, ms: 60_000, atSeq: 2 }], {
      signal: ac.signal,
    });
    expect(ms).toBeLessThan(TIMEOUT / 5);
    for (const e of errors(res)) expect(e).toMatch(/the run was stopped: stopped by the test/);
    expect(res.diagnosis).toMatch(/^first failure: the run was stopped: stopped by the test/);
    expect(res.remarks).toBeUndefined();
  });

  it('a rank killed at world #3: every survivor fails at once naming the dead rank', async () => {
    const { res, ms } = await run({ scenario: 'steps' }, [{ kind: 'kill', rank: 2, atSeq: 3 }]);
    const errs = errors(res);
    expect(errs[2]).toMatch(/rank 2 was killed by fault injection when it issued all_reduce #3 on group world/);
    for (const r of [0, 1, 3]) expect(errs[r]).toMatch(/rank 2 died \(killed by fault injection/);
    expect(ms).toBeLessThan(TIMEOUT / 5);
    expect(res.diagnosis).toMatch(/first failure: rank 2 died/);
    expect(res.diagnosis).toMatch(
      /group world \(ranks 0,1,2,3\): every rank joined collective #3|Not all ranks joining collective #3/,
    );
    // A failed rank carries its flight dump.
    const o0 = res.outcomes[0]!;
    expect(!o0.ok && o0.dump?.entries.some((e) => e.state === 'failed' && e.seq === 3 && e.group === 'world')).toBe(
      true,
    );
  });

  it('a rank killed on a sub-group breaks every group it belongs to', async () => {
    const { res, ms } = await run({ scenario: 'steps' }, [{ kind: 'kill', rank: 1, atSeq: 2, group: 'ep' }]);
    expect(res.outcomes.every((o) => !o.ok)).toBe(true);
    for (const r of [0, 2, 3])
      expect(errors(res)[r]).toMatch(
        /rank 1 died \(killed by fault injection when it issued all_gather #2 on group ep\)/,
      );
    expect(ms).toBeLessThan(TIMEOUT / 5);
  });

  it('a mismatched size: "rank 3 called reduce_scatter #2 on group fsdp with 40 elements, ranks 0,1,2 with 16"', async () => {
    const { res, ms } = await run({ scenario: 'steps' }, [
      { kind: 'mismatch-size', rank: 3, atSeq: 2, group: 'fsdp', delta: 24 },
    ]);
    for (const e of errors(res))
      expect(e).toContain('rank 3 called reduce_scatter #2 on group fsdp with 40 elements, ranks 0,1,2 with 16');
    expect(ms).toBeLessThan(TIMEOUT / 5);
    // The dumps carry the mismatch, so inspect finds it post mortem too.
    expect(res.diagnosis).toContain(
      'group fsdp (ranks 0,1,2,3): mismatch at collective #2: rank 3 called reduce_scatter #2 on group fsdp with 40 elements, ranks 0,1,2 with 16',
    );
  });

  it('a mismatched op: "rank 2 called all_gather #2 on group world, ranks 0,1,3 called all_reduce #2"', async () => {
    const { res, ms } = await run({ scenario: 'steps' }, [{ kind: 'mismatch-op', rank: 2, atSeq: 2 }]);
    for (const e of errors(res))
      expect(e).toContain('mismatch: rank 2 called all_gather #2 on group world, ranks 0,1,3 called all_reduce #2');
    expect(ms).toBeLessThan(TIMEOUT / 5);
  });

  it('a rank that skips a collective: desync across groups, reported with where every rank is and the wait cycle', async () => {
    const { res, ms } = await run({ scenario: 'skip', skipRank: 2, skipStep: 3 });
    const expected = 'rank 2 is in all_gather #4 on group ep, ranks 0,1,3 in reduce_scatter #4 on group fsdp';
    for (const e of errors(res)) {
      expect(e).toMatch(/desync: nothing moved for \d+ ms/);
      expect(e).toContain(expected);
    }
    expect(ms).toBeLessThan(TIMEOUT / 5);
    expect(res.diagnosis).toContain(`where the ranks are: ${expected}`);
    expect(res.diagnosis).toContain('group fsdp (ranks 0,1,2,3): Not all ranks joining collective #4');
    expect(res.diagnosis).toContain('missing ranks: {2}');
    expect(res.diagnosis).toMatch(
      /wait cycle: rank 2 \(all_gather #4 on group ep\) waits for rank 3, rank 3 \(reduce_scatter #4 on group fsdp\) waits for rank 2/,
    );
  });

  it('a rank that exits early: the others fail as soon as they need it', async () => {
    const { res, ms } = await run({ scenario: 'early-exit' });
    expect(res.outcomes[3]!.ok).toBe(true);
    for (const r of [0, 1, 2]) expect(errors(res)[r]).toMatch(/rank 3 (finished its program|is gone)/);
    expect(ms).toBeLessThan(TIMEOUT / 5);
  });

  it('a slow rank within the timeout only slows the run', async () => {
    const { res, ms } = await run({ scenario: 'steps', steps: 3 }, [{ kind: 'delay', rank: 1, ms: 40 }]);
    expect(res.outcomes.every((o) => o.ok)).toBe(true);
    // 3 steps × 3 collectives (+2 splits are not delayed): at least 9 delays of 40 ms.
    expect(ms).toBeGreaterThan(9 * 40 - 20);
  });

  it('a failure while other collectives are in flight leaves no unhandled rejection behind', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const { res } = await run({ scenario: 'overlap' }, [{ kind: 'kill', rank: 1, atSeq: 2, group: 'ep' }]);
      expect(res.outcomes.every((o) => !o.ok)).toBe(true);
      expect(errors(res)[0]).toMatch(/all_gather #2 on group ep \(rank 0\) failed: rank 1 died/);
      await new Promise((r) => setTimeout(r, 20));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('a rank slower than the timeout: every rank times out, saying whom they wait for', async () => {
    const { res, ms } = await run({ scenario: 'steps', steps: 3 }, [{ kind: 'delay', rank: 1, ms: 700, atSeq: 2 }], {
      timeoutMs: 200,
    });
    // Rank 1 issued the call (its own timer runs) but its arrival is late, so it times out like the others. A rank
    // whose own timer is later than the first one's gets the first one's report ("rank 0 timed out after …").
    for (const e of errors(res)) {
      expect(e).toMatch(
        /^(timeout after 200 ms in all_reduce #2 on group world: |all_reduce #2 on group world \(rank \d\) failed: rank \d timed out after 200 ms)/,
      );
      expect(e).toContain(
        'waiting for rank 1: rank 1 is in all_reduce #2 on group world but its arrival is delayed (fault injection); ranks 0,2,3 joined all_reduce #2 on group world',
      );
    }
    expect(ms).toBeLessThan(700);
  });

  it('a profile-forbidden op fails on every rank before anything is sent, naming the alternative', async () => {
    const cases: [ScenarioArgs['scenario'], Partial<WorldOptions>, RegExp][] = [
      [
        'a2a-equal',
        { profile: 'xccl-2025' },
        /all_to_all is not supported by backend inproc\/xccl-2025\. Instead: use dispatch = "allgather-padded"/,
      ],
      [
        'premul-world',
        { profile: 'xccl-2025' },
        /all_reduce on group ep .*ReduceOp\.PREMUL_SUM is not supported by backend inproc\/xccl-2025\. Instead: multiply by the factor locally/,
      ],
      [
        'premul-world',
        { profile: 'xccl-2026', ranksPerNode: 2 },
        /all_reduce on group world .*PREMUL_SUM is supported only within one node, and this group spans several/,
      ],
      [
        'all-to-all-uneven',
        { profile: 'oneccl-v2' },
        /all_to_all supports only equal counts per rank here \(got uneven counts\) by backend inproc\/oneccl-v2/,
      ],
    ];
    for (const [scenario, world, re] of cases) {
      const { res, ms } = await run({ scenario }, [], world);
      for (const e of errors(res)) expect(e, `${scenario} ${JSON.stringify(world)}`).toMatch(re);
      expect(ms).toBeLessThan(TIMEOUT / 5);
    }
    // And what the profile allows works.
    expect((await run({ scenario: 'a2a-equal' }, [], { profile: 'oneccl-v2' })).res.outcomes.every((o) => o.ok)).toBe(
      true,
    );
    expect(
      (await run({ scenario: 'premul-world' }, [], { profile: 'xccl-2026' })).res.outcomes.every((o) => o.ok),
    ).toBe(true);
  });

  describe('dumps on failure', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moe-comm-dumps-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('every failing rank writes its dump; inspect reads the directory and finds the dead rank', async () => {
      const { res } = await run({ scenario: 'steps' }, [{ kind: 'kill', rank: 3, atSeq: 4, group: 'fsdp' }], {
        dumpDir: dir,
      });
      expect(res.outcomes.every((o) => !o.ok)).toBe(true);
      const dumps = readDumps([dir]);
      expect(dumps.map((d) => d.rank).sort()).toEqual([0, 1, 2, 3]);
      const text = formatInspect(dumps.filter((d) => d.rank !== 3));
      expect(text).toContain('no dump from rank 3');
      expect(text).toContain('group fsdp (ranks 0,1,2,3): Not all ranks joining collective #4');
      expect(text).toMatch(/missing ranks: \{3\} \(no dump from rank 3\)/);
    });
  });

  it('a rank stuck outside any collective is given up on one timeout after the others ended', async () => {
    const world = createInprocWorld(3, { timeoutMs: 200 });
    const t0 = performance.now();
    const res = await runRanks(
      world,
      async (ctx: RankContext<null>) => {
        await ctx.world.barrier();
        if (ctx.rank === 1) await new Promise(() => {});
        return ctx.rank;
      },
      null,
    );
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(res.outcomes.map((o) => o.ok)).toEqual([true, false, true]);
    expect(errors(res)[1]).toMatch(
      /rank 1 did not finish within 200 ms after ranks 0,2 ended, and it is not waiting in a collective/,
    );
  });

  it('direct use: killing a rank rejects the pending calls of its group with kind peer-dead', async () => {
    const w = createInprocWorld(3, { timeoutMs: TIMEOUT, seed: 4 });
    const pending = [0, 1].map((r) =>
      w.comms[r]!.allReduce(new Float32Array(2), { op: 'sum' }).then(
        () => null,
        (e: unknown) => e,
      ),
    );
    await new Promise((r) => setTimeout(r, 5));
    w.kill(2, 'test kill');
    for (const e of await Promise.all(pending)) {
      expect(e).toBeInstanceOf(CollectiveError);
      expect((e as CollectiveError).kind).toBe('peer-dead');
      expect((e as CollectiveError).detail.report).toBe('rank 2 died (test kill)');
    }
  });
});
