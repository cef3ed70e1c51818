// `moe-actors ep-ops`: every EP dispatch strategy's collectives, forward and backward, checked per rank against a
// local reference, on inproc and threads at 2 and 4 ranks and on mpi and ccl at 2 (real processes). The check
// must be able to fail: a communicator whose all_to_all_v drops one element makes a2a FAILED, the others ok.
import { describe, expect, it } from 'vitest';
import type { Communicator } from '../../src/comm/communicator.ts';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import type { RankContext } from '../../src/comm/launch.ts';
import { formatEpOps } from '../../src/cli/ep-ops.ts';
import { rankMain, type EpOpsArgs, type EpOpsRankResult } from '../../src/cli/ep-ops-rank.ts';
import { cclSkip } from '../comm/ccl-skip.ts';
import { cli, mpiUnavailable, show, type CliResult } from './helpers.ts';

const ROW = /^(a2a|allgather-padded|allgather-rs) +(ok|FAILED on ranks? [\d, ]+|cannot run)/;
function verdicts(r: CliResult): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const m = ROW.exec(line.replace(/\x1b\[[0-9;]*m/g, ''));
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}
const ALL_OK = { a2a: 'ok', 'allgather-padded': 'ok', 'allgather-rs': 'ok' };

describe('moe-actors ep-ops', () => {
  for (const transport of ['inproc', 'threads']) {
    for (const n of [2, 4]) {
      it(`${transport}, ${n} ranks: every strategy moves the rows right, forward and backward`, async () => {
        const r = await cli(['ep-ops', '--transport', transport, '--ranks', String(n), '--reps', '1']);
        expect(r.code, show(r)).toBe(0);
        expect(r.stdout).toContain(`ep-ops: ${n} ranks on ${transport} (${transport}/full)`);
        expect(verdicts(r)).toEqual(ALL_OK);
      });
    }
  }

  it('profile xccl-2025: a2a cannot run (the planner’s reason), the all_gather strategies do', async () => {
    const r = await cli(['ep-ops', '--ranks', '2', '--profile', 'xccl-2025', '--reps', '1']);
    expect(r.code, show(r)).toBe(0);
    expect(verdicts(r)).toEqual({ ...ALL_OK, a2a: 'cannot run' });
    expect(r.stdout).toContain('a2a needs all_to_all');
  });

  it('bad options: exit 1 naming the option', async () => {
    const r = await cli(['ep-ops', '--ranks', '4', '--experts', '6']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--experts 6 must be a multiple of the 4 ranks');
  });

  it('a communicator that corrupts all_to_all_v output: a2a FAILED, the all_gather strategies still ok', async () => {
    const world = createInprocWorld(2, { seed: 1, timeoutMs: 5000 });
    const broken = (c: Communicator): Communicator =>
      new Proxy(c, {
        get(t, prop, recv) {
          if (prop === 'allToAllV') {
            return async (...a: Parameters<Communicator['allToAllV']>) => {
              await t.allToAllV(...a);
              if (a[2].length > 8 && a[2] instanceof Float32Array) a[2][a[2].length - 1] += 0.5;
            };
          }
          const v = Reflect.get(t, prop, recv);
          return typeof v === 'function' ? v.bind(t) : v;
        },
      });
    const args: EpOpsArgs = { tokens: 16, dim: 4, experts: 4, topk: 2, reps: 1, seed: 3 };
    const res = await runRanks(world, (ctx: RankContext<EpOpsArgs>) => rankMain({ ...ctx, world: broken(ctx.world) }), args);
    const rs = res.outcomes.map((o) => (o as { value: EpOpsRankResult }).value);
    const { text, wrong } = formatEpOps(rs, 'inproc');
    expect(wrong, text).toEqual(['a2a']);
  });
});

describe.skipIf(mpiUnavailable() !== null)('moe-actors ep-ops under mpiexec.mpich -n 2', () => {
  it('mpi: every strategy ok', { timeout: 60_000 }, async () => {
    const r = await cli(['ep-ops', '--transport', 'mpi', '--reps', '1'], { mpi: 2 });
    expect(r.code, show(r)).toBe(0);
    expect(verdicts(r)).toEqual(ALL_OK);
  });

  it.skipIf(cclSkip('in test/cli/ep-ops.test.ts (ep-ops on ccl at 2 ranks)'))('ccl: every strategy ok on oneCCL', { timeout: 90_000 }, async () => {
    const r = await cli(['ep-ops', '--transport', 'ccl', '--reps', '1'], { mpi: 2 });
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toContain('ep-ops: 2 ranks on ccl (ccl/full)');
    expect(verdicts(r)).toEqual(ALL_OK);
  });
});
