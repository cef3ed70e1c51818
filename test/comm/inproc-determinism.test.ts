// The inproc scheduler: the same seed replays the same interleaving (schedule log, global flight-record order, and
// the choices of a program that reacts to whichever collective finishes first); different seeds explore others.
import { describe, expect, it } from 'vitest';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import type { RankContext } from '../../src/comm/launch.ts';
import { rankMain as conformance, type ConformanceArgs } from './programs/conformance.ts';

async function conformanceRun(seed: number) {
  const world = createInprocWorld(4, { seed, timeoutMs: 5000 });
  const res = await runRanks(world, conformance, { seed: 21 } satisfies ConformanceArgs);
  expect(res.outcomes.every((o) => o.ok)).toBe(true);
  const order = world.recorders
    .flatMap((rec) =>
      rec
        .entries()
        .map((e) => ({ key: `r${rec.rank} ${e.group}#${e.seq} ${e.op}`, t: e.tCompleted!, rank: rec.rank, id: e.id })),
    )
    .sort((a, b) => a.t - b.t || a.rank - b.rank || a.id - b.id)
    .map((e) => e.key);
  return { log: [...world.scheduleLog()], order };
}

/** Every rank races two all_reduces on different groups and records which finished first, three times. */
async function racer(ctx: RankContext<null>): Promise<string[]> {
  const other = await ctx.world.split(ctx.rank % 2, ctx.rank, 'pair');
  const seen: string[] = [];
  for (let i = 0; i < 3; i++) {
    const a = ctx.world.allReduce(new Float32Array(1), { op: 'sum' }).then(() => 'world');
    const b = other.allReduce(new Float32Array(1), { op: 'sum' }).then(() => 'pair');
    seen.push(await Promise.race([a, b]));
    await Promise.all([a, b]);
  }
  return seen;
}

async function racerRun(seed: number): Promise<string> {
  const world = createInprocWorld(4, { seed, timeoutMs: 5000 });
  const res = await runRanks(world, racer, null);
  return res.outcomes
    .map((o) => {
      if (!o.ok) throw new Error(`seed ${seed}: rank ${o.rank} failed: ${o.error}`);
      return o.value.join(',');
    })
    .join(' | ');
}

describe('inproc determinism', () => {
  it('same seed ⇒ identical schedule and identical flight-record order', async () => {
    const a = await conformanceRun(11);
    const b = await conformanceRun(11);
    expect(a.log.length).toBeGreaterThan(1000);
    expect(b.log).toEqual(a.log);
    expect(b.order).toEqual(a.order);
  });

  it('different seeds ⇒ different interleavings', async () => {
    const base = await conformanceRun(11);
    const others = [await conformanceRun(12), await conformanceRun(13)];
    for (const o of others) expect(o.log).not.toEqual(base.log);
  });

  it('a program that reacts to completion order makes the same choices under the same seed, and other choices under some other seed', async () => {
    const first = await racerRun(5);
    expect(await racerRun(5)).toBe(first);
    const outcomes = new Set<string>();
    for (let seed = 0; seed < 8; seed++) outcomes.add(await racerRun(seed));
    expect(outcomes.size).toBeGreaterThan(1);
  });
});
