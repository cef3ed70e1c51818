// split on inproc: ordering, collectives on the new groups, and the ways a split fails (a member leaves, members
// disagree on the name, a member calls a collective instead) — promptly, with a report.
import { describe, expect, it } from 'vitest';
import { CollectiveError } from '../../src/comm/errors.ts';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import type { RankContext } from '../../src/comm/launch.ts';

const settle = <T>(p: Promise<T>) =>
  p.then(
    (v) => ({ ok: true as const, v }),
    (e: unknown) => ({ ok: false as const, e: e as CollectiveError }),
  );

describe('inproc split', () => {
  it('orders by key, ties by parent rank, and the new groups work independently', async () => {
    const w = createInprocWorld(5, { seed: 7 });
    const subs = await Promise.all(w.comms.map((c, r) => c.split(r % 2, r === 4 ? -1 : 0, 'parity')));
    expect(subs.map((s) => s.ranks)).toEqual([
      [4, 0, 2],
      [1, 3],
      [4, 0, 2],
      [1, 3],
      [4, 0, 2],
    ]);
    expect(subs.map((s) => s.rank)).toEqual([1, 0, 2, 1, 0]);
    const sums = await Promise.all(
      subs.map(async (s, r) => {
        const b = new Int32Array([r]);
        await s.allReduce(b, { op: 'sum' });
        return b[0];
      }),
    );
    expect(sums).toEqual([6, 4, 6, 4, 6]);
  });

  it('members of one color naming the group differently fail with a mismatch', async () => {
    const w = createInprocWorld(2);
    const res = await Promise.all(w.comms.map((c, r) => settle(c.split(0, r, r === 0 ? 'ep' : 'fsdp'))));
    for (const x of res) {
      expect(x.ok).toBe(false);
      if (!x.ok)
        expect(x.e.message).toMatch(
          /the members of color 0 \(ranks 0,1\) named the new group differently: "ep", "fsdp"/,
        );
    }
  });

  it('a member that exits instead of splitting fails the others at once', async () => {
    const w = createInprocWorld(3, { timeoutMs: 10_000 });
    const t0 = performance.now();
    const res = await runRanks(
      w,
      async (ctx: RankContext<null>) => {
        if (ctx.rank === 2) return 'left';
        await ctx.world.split(0, ctx.rank, 'sub');
        return 'split';
      },
      null,
    );
    expect(performance.now() - t0).toBeLessThan(1000);
    for (const r of [0, 1]) {
      const o = res.outcomes[r]!;
      expect(!o.ok && o.error).toMatch(
        /split of group world into "sub" \(rank \d\) failed: rank 2 finished its program and will not join further collectives on group world/,
      );
    }
  });

  it('a member calling a collective while the others split is a desync, reported well inside the timeout', async () => {
    const w = createInprocWorld(3, { timeoutMs: 10_000 });
    const t0 = performance.now();
    const res = await runRanks(
      w,
      async (ctx: RankContext<null>) => {
        if (ctx.rank === 1) await ctx.world.barrier();
        else await ctx.world.split(0, ctx.rank, 'sub');
        return null;
      },
      null,
    );
    expect(performance.now() - t0).toBeLessThan(2000);
    for (const o of res.outcomes) {
      expect(o.ok).toBe(false);
      if (!o.ok) {
        expect(o.error).toContain(
          'rank 1 is in barrier #1 on group world, ranks 0,2 in split of group world into "sub"',
        );
        expect(o.error).toContain(
          'barrier #1 on group world waits for ranks 0,2; split #1 of group world waits for rank 1',
        );
      }
    }
  });

  it('a split that never completes times out with a message naming the group', async () => {
    const w = createInprocWorld(2, { timeoutMs: 100, stallMs: 0 });
    const x = await settle(w.comms[0]!.split(0, 0, 'lonely'));
    expect(x.ok).toBe(false);
    if (!x.ok) {
      expect(x.e.kind).toBe('timeout');
      expect(x.e.message).toMatch(
        /timeout after 100 ms in split of group world into "lonely" \(rank 0, color 0, key 0\): not every member of world \(ranks 0,1\) called split/,
      );
    }
  });
  it('setDefaultTimeout reaches the groups split before and after it, and not calls that pass their own', async () => {
    const w = createInprocWorld(2, { timeoutMs: 5000, stallMs: 0 });
    const early = await Promise.all(w.comms.map((c, r) => c.split(0, r, 'early')));
    for (const c of w.comms) c.setDefaultTimeout(100);
    const late = await Promise.all(w.comms.map((c, r) => c.split(0, r, 'late')));
    expect(() => w.comms[0]!.setDefaultTimeout(0)).toThrow(/a timeout must be a positive number of ms \(got 0\)/);
    // Rank 1 never joins: rank 0 alone waits, and gives up after the new default.
    for (const g of [w.comms[0]!, early[0]!, late[0]!]) {
      const t0 = performance.now();
      const x = await settle(g.barrier());
      expect(x.ok).toBe(false);
      if (!x.ok)
        expect(x.e.message, g.name).toMatch(new RegExp(`^timeout after 100 ms in barrier #1 on group ${g.name}`));
      expect(performance.now() - t0).toBeLessThan(2000);
    }
    // A call with its own timeout keeps it.
    const v = createInprocWorld(2, { timeoutMs: 5000, stallMs: 0 });
    v.comms[1]!.setDefaultTimeout(100);
    const own = await settle(
      Promise.race([
        v.comms[1]!.barrier({ timeoutMs: 10_000 }),
        new Promise((r) => setTimeout(r, 300, 'still waiting')),
      ]),
    );
    expect(own).toEqual({ ok: true, v: 'still waiting' });
    await v.comms[0]!.barrier();
  });
});
