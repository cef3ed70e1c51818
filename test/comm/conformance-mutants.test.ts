// The conformance program must be able to fail: run it over communicators with planted bugs and check that it
// names the op, the group and the first wrong element.
import { describe, expect, it } from 'vitest';
import type { CommArray, Communicator, ReduceOp } from '../../src/comm/communicator.ts';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import type { RankContext } from '../../src/comm/launch.ts';
import { rankMain, type ConformanceArgs } from './programs/conformance.ts';

type Override = Partial<Record<keyof Communicator, (target: Communicator, ...args: any[]) => unknown>>;

function mutant(c: Communicator, over: Override): Communicator {
  return new Proxy(c, {
    get(target, prop, recv) {
      const o = over[prop as keyof Communicator];
      if (o) return (...args: unknown[]) => o(target, ...args);
      const v = Reflect.get(target, prop, recv);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

async function runMutant(size: number, over: Override): Promise<string[]> {
  const world = createInprocWorld(size, { seed: 3, timeoutMs: 5000 });
  const main = (ctx: RankContext<ConformanceArgs>) => rankMain({ ...ctx, world: mutant(ctx.world, over) });
  const res = await runRanks(world, main, { seed: 4 });
  return res.outcomes.filter((o) => !o.ok).map((o) => (o.ok ? '' : o.error));
}

describe('conformance catches broken communicators', () => {
  it('float32 sums reduced in reverse rank order (not bitwise reproducible)', async () => {
    const errs = await runMutant(4, {
      allReduce: async (t, buf: CommArray, op: ReduceOp, opts) => {
        if (!(buf instanceof Float32Array) || op.op !== 'sum' || buf.length === 0) return t.allReduce(buf, op, opts);
        const all = new Float32Array(buf.length * t.size);
        await t.allGather(buf.slice(), all, opts);
        for (let i = 0; i < buf.length; i++) {
          let acc = all[(t.size - 1) * buf.length + i]!;
          for (let r = t.size - 2; r >= 0; r--) acc = Math.fround(acc + all[r * buf.length + i]!);
          buf[i] = acc;
        }
      },
    });
    expect(errs[0]).toMatch(
      /^conformance \(seed 4, round 0, backend inproc\/full\): all_reduce sum float32 n=\d+ \[case \d+\] on group world .*element \d+ is .*, expected .* \(\|diff\| .*, tolerance exact\)/,
    );
  });

  it('all_to_all_v delivering the chunks of two sources swapped', async () => {
    const errs = await runMutant(3, {
      allToAllV: async (t, send: CommArray, sc: number[], recv: CommArray, rc: number[], opts) => {
        await t.allToAllV(send, sc, recv, rc, opts);
        if (rc[0]! > 0 && rc[1]! > 0) {
          const a = recv.slice(0, rc[0]);
          recv.copyWithin(0, rc[0]!, rc[0]! + rc[1]!);
          recv.set(a, rc[1]);
        }
      },
    });
    expect(errs.some((e) => /all_to_all_v (float32|float64|int32) .* on group world .*element \d+ is/.test(e))).toBe(
      true,
    );
  });

  it('all_gather writing one element past the receive view', async () => {
    const errs = await runMutant(2, {
      allGather: async (t, send: CommArray, recv: CommArray, opts) => {
        await t.allGather(send, recv, opts);
        const Ctor = recv.constructor as Float32ArrayConstructor;
        new Ctor(recv.buffer as ArrayBuffer, recv.byteOffset, recv.length + 1)[recv.length] = 1;
      },
    });
    expect(errs[0]).toMatch(
      /all_gather float32 n=0 .*buffer guard: element 0 \(after the view\) was overwritten with 1/,
    );
  });

  it('split ignoring the key', async () => {
    const errs = await runMutant(4, {
      split: (t, color: number, _key: number, name: string) => t.split(color, 0, name),
    });
    expect(errs[0]).toMatch(/split\(\d, \d\) of world .*expected ranks \[2,0\] ordered by \(key, rank\)/);
  });

  it('byte counters that miss calls', async () => {
    const errs = await runMutant(2, {
      barrier: async (t, opts) => {
        await t.barrier(opts);
        t.bytes.calls--;
      },
    });
    expect(errs[0]).toMatch(/byte counters .*bytes\.calls grew by \d+, but \d+ collectives ran/);
  });
});
