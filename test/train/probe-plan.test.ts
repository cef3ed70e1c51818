// [comm] probe: the plan is made from what the start-up probe measured, narrowed by the profile. Ranks on inproc
// whose all_to_all_v gives wrong numbers (a broken backend, as a real one can be) must not be planned onto a2a;
// the same world, working, is; and 'auto' probes only on mpi and ccl.
import { describe, expect, it } from 'vitest';
import type { Communicator } from '../../src/comm/communicator.ts';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import type { RankContext } from '../../src/comm/launch.ts';
import { loadJobConfig } from '../../src/train/job-config.ts';
import { probeAndPlan, probeWanted, type ProbedPlan } from '../../src/train/probe-plan.ts';

const cfg = loadJobConfig('configs/debug_ep4.toml', [
  '--comm.transport',
  'inproc',
  '--comm.ranks',
  '2',
  '--comm.probe',
  'on',
  '--parallelism.data_parallel_shard_degree',
  '2',
  '--parallelism.expert_parallel_degree',
  '2',
]);

function brokenAllToAll(c: Communicator): Communicator {
  return new Proxy(c, {
    get(target, prop, recv) {
      if (prop === 'allToAllV') {
        return async (...args: Parameters<Communicator['allToAllV']>) => {
          await target.allToAllV(...args);
          args[2].fill(-7);
        };
      }
      const v = Reflect.get(target, prop, recv);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

async function plans(wrap: (c: Communicator) => Communicator): Promise<ProbedPlan[]> {
  const world = createInprocWorld(2, { seed: 1, timeoutMs: 5000 });
  const res = await runRanks(world, (ctx: RankContext<unknown>) => probeAndPlan(wrap(ctx.world), cfg), { seed: 2 });
  return res.outcomes.map((o) => {
    if (!o.ok) throw new Error(o.error);
    return o.value as ProbedPlan;
  });
}

describe('start-up probe → plan', () => {
  it('a working transport: a2a is chosen and plan.txt lists every probed collective', async () => {
    const [p] = await plans((c) => c);
    expect(p!.plan.dispatch.choice).toBe('a2a');
    expect(p!.text).toMatch(/start-up probe on inproc\/full/);
    expect(p!.text).toMatch(/all_to_all_v\(uneven\)\s+ok/);
    expect(p!.text).toMatch(/measured: .*allToAllV=yes/);
    expect(p!.changes).toEqual([]);
  });

  it('all_to_all_v giving wrong numbers: every rank plans without a2a, and the text says why', async () => {
    const ps = await plans(brokenAllToAll);
    for (const p of ps) {
      expect(p.report.capabilities.allToAllV).toBe('no');
      expect(p.plan.dispatch.choice).not.toBe('a2a');
      expect(p.plan.dispatch.choice).toBe(ps[0]!.plan.dispatch.choice);
    }
    expect(ps[0]!.text).toMatch(/all_to_all_v\(equal\)\s+FAILED: wrong result/);
    // The plan says what changed and why, in one sentence.
    expect(ps[0]!.changes).toHaveLength(1);
    expect(ps[0]!.changes[0]).toMatch(/^all_to_all_v\(equal\): wrong result.*; dispatch allgather-\w+ instead of a2a$/);
    expect(ps[0]!.text).toContain(`changed by the start-up probe:\n  ${ps[0]!.changes[0]}`);
  });

  it("'auto' probes on mpi and ccl only; 'off' never", () => {
    const auto = loadJobConfig('configs/debug_ep4.toml', []);
    expect(['inproc', 'threads', 'mpi', 'ccl'].map((t) => probeWanted(auto, t))).toEqual([false, false, true, true]);
    const off = loadJobConfig('configs/debug_ep4.toml', ['--comm.probe', 'off']);
    expect(probeWanted(off, 'ccl')).toBe(false);
  });
});
