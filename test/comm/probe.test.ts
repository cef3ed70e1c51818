// The startup probe: on inproc it must find exactly what each profile allows, and it must catch a backend that
// returns wrong numbers on one rank (reported identically on every rank).
import { describe, expect, it } from 'vitest';
import { FULL, PROFILES, type ProfileName } from '../../src/comm/capabilities.ts';
import type { Communicator, ReduceOp } from '../../src/comm/communicator.ts';
import { createInprocWorld } from '../../src/comm/inproc/launch.ts';
import { probe } from '../../src/comm/probe.ts';

async function probeAll(comms: Communicator[]) {
  return Promise.all(comms.map((c) => probe(c, { timeoutMs: 2000 })));
}

describe('probe', () => {
  for (const name of ['full', 'xccl-2025', 'oneccl-v2'] as ProfileName[]) {
    it(`finds the capabilities of profile ${name}`, async () => {
      const w = createInprocWorld(3, { profile: name, seed: 2 });
      const reports = await probeAll(w.comms);
      for (const r of reports) expect(r.capabilities).toEqual(PROFILES[name].caps);
      const denied = reports[0]!.results.filter((r) => !r.ok).map((r) => r.name);
      if (name === 'full') expect(denied).toEqual([]);
      if (name === 'xccl-2025')
        expect(denied).toEqual([
          'all_gather_v',
          'all_reduce(premul_sum)',
          'all_to_all_v(equal)',
          'all_to_all_v(uneven)',
        ]);
      if (name === 'oneccl-v2') expect(denied).toEqual(['all_gather_v', 'all_to_all_v(uneven)']);
    });
  }

  it('xccl-2026 on a group spanning two nodes keeps premul_sum as single-node', async () => {
    const w = createInprocWorld(4, { profile: 'xccl-2026', ranksPerNode: 2 });
    const [r] = await probeAll(w.comms);
    expect(r!.capabilities).toEqual({ ...FULL, premulSum: 'single-node' });
    expect(r!.results.find((x) => x.name === 'all_reduce(premul_sum)')!.reason).toMatch(/only within one node/);
  });

  it('a wrong AVG on one rank only (like XCCL on B60) is reported as missing on every rank', async () => {
    const w = createInprocWorld(4, { seed: 5 });
    const broken = w.comms.map(
      (c, r) =>
        new Proxy(c, {
          get(target, prop, recv) {
            if (prop === 'allReduce') {
              return async (buf: Float32Array, op: ReduceOp, opts?: object) => {
                await target.allReduce(buf, op, opts);
                if (op.op === 'avg' && r === 2) buf[0] = buf[0]! + 1;
              };
            }
            const v = Reflect.get(target, prop, recv);
            return typeof v === 'function' ? v.bind(target) : v;
          },
        }),
    );
    const reports = await probeAll(broken);
    for (const [r, rep] of reports.entries()) {
      expect(rep.capabilities.avg, `rank ${r}`).toBe(false);
      expect(rep.capabilities.allReduce).toBe(true);
    }
    expect(reports[2]!.results.find((x) => x.name === 'all_reduce(avg)')!.reason).toMatch(
      /wrong result: element 0 is 3\.5, expected 2\.5/,
    );
    expect(reports[0]!.results.find((x) => x.name === 'all_reduce(avg)')!.reason).toMatch(/on another rank/);
  });

  it('a collective that never completes stops the probe within its timeout and marks the rest not probed', async () => {
    // Rank 1 is slower than the probe's timeout at its first collective.
    const w = createInprocWorld(2, { faults: [{ kind: 'delay', rank: 1, ms: 600, atSeq: 1 }] });
    const t0 = performance.now();
    const reports = await Promise.all(w.comms.map((c) => probe(c, { timeoutMs: 150 })));
    expect(performance.now() - t0).toBeLessThan(600);
    for (const rep of reports) {
      expect(rep.results[0]).toMatchObject({ name: 'all_gather', ok: false });
      expect(rep.results[1]!.reason).toMatch(
        /^not probed: the group failed earlier \(all_gather: timeout after 150 ms/,
      );
      expect(rep.capabilities.allReduce).toBe(false);
    }
  });
});
