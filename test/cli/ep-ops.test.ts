// `moe-actors ep-ops`: every EP dispatch strategy's dispatch → expert compute → combine, forward and backward,
// checked on every rank against the single-rank computation of the same tokens (uneven top-2 routing, one rank
// without rows, SwiGLU experts, a shared expert), on inproc and threads at 2 and 4 ranks and on mpi and ccl under
// mpiexec.mpich -n 2 and -n 4. The checks must be able to fail: a communicator whose all_to_all_v output is off by
// one element makes a2a FAILED (naming the rank), the all_gather strategies stay ok.
import { describe, expect, it } from 'vitest';
import type { Communicator } from '../../src/comm/communicator.ts';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import type { RankContext } from '../../src/comm/launch.ts';
import { formatEpOps } from '../../src/cli/ep-ops.ts';
import { CHECKS, rankMain, type EpOpsArgs, type EpOpsRankResult } from '../../src/cli/ep-ops-rank.ts';
import { cclSkip } from '../comm/ccl-skip.ts';
import { cli, mpiUnavailable, show, type CliResult } from './helpers.ts';

const ROW =
  /^(a2a|allgather-padded|allgather-rs) +(forward: [a-z ]+?|backward: [a-z ]+?|all) +(ok|FAILED on ranks? [\d,]+|cannot run)/;
/** strategy → check → verdict, from the printed table. */
function verdicts(r: CliResult): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const line of r.stdout.split('\n')) {
    const m = ROW.exec(line.replace(/\x1b\[[0-9;]*m/g, ''));
    if (m) (out[m[1]!] ??= {})[m[2]!] = m[3]!;
  }
  return out;
}
const OK = Object.fromEntries(CHECKS.map((c) => [c, 'ok']));
const ALL_OK = { a2a: OK, 'allgather-padded': OK, 'allgather-rs': OK };
const SMALL = ['--tokens', '24', '--dim', '16', '--hidden', '16', '--shared-hidden', '8', '--reps', '1'];

describe('moe-actors ep-ops', () => {
  for (const transport of ['inproc', 'threads']) {
    for (const n of [2, 4]) {
      it(`${transport}, ${n} ranks: every strategy equals one rank, forward and backward`, async () => {
        const r = await cli(['ep-ops', '--transport', transport, '--ranks', String(n), ...SMALL]);
        expect(r.code, show(r)).toBe(0);
        expect(r.stdout).toContain(`ep-ops: ${n} ranks on ${transport} (${transport}/full)`);
        // The routing reaches the corners: top-2, a shared expert, and the last rank's experts get no rows.
        expect(r.stdout).toMatch(
          new RegExp(
            `top-2 of 8 experts, a shared expert \\(hidden 8\\); rows each rank's experts receive: [\\d, ]+ \\(rank ${n - 1} none\\)`,
          ),
        );
        expect(verdicts(r)).toEqual(ALL_OK);
      });
    }
  }

  it('profile xccl-2025: a2a cannot run (the planner’s reason), the all_gather strategies do', async () => {
    const r = await cli(['ep-ops', '--ranks', '2', '--profile', 'xccl-2025', ...SMALL]);
    expect(r.code, show(r)).toBe(0);
    expect(verdicts(r)).toEqual({ ...ALL_OK, a2a: { all: 'cannot run' } });
    expect(r.stdout).toContain('a2a needs all_to_all');
  });

  it('bad options: exit 1 naming the option', async () => {
    const r = await cli(['ep-ops', '--ranks', '4', '--experts', '6']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--experts 6 must be a multiple of the 4 ranks');
    const s = await cli(['ep-ops', '--strategy', 'ring']);
    expect(s.code).toBe(1);
    expect(s.stderr).toContain('--strategy ring: unknown; use one of a2a, allgather-padded, allgather-rs or all');
  });

  it('a communicator that corrupts one dispatched row: a2a FAILED where it shows, the all_gather strategies ok', async () => {
    const world = createInprocWorld(2, { seed: 1, timeoutMs: 5000 });
    const broken = (c: Communicator): Communicator => {
      let rowsReceived = 0;
      return new Proxy(c, {
        get(t, prop, recv) {
          if (prop === 'allToAllV') {
            return async (...a: Parameters<Communicator['allToAllV']>) => {
              await t.allToAllV(...a);
              // Rank 0's experts receive rows (rank 1's receive none): the last element of the first dispatch, a
              // row that rank 1 sent.
              if (t.rank === 0 && a[2] instanceof Float32Array && rowsReceived++ === 0) a[2][a[2].length - 1] += 0.5;
            };
          }
          const v = Reflect.get(t, prop, recv);
          return typeof v === 'function' ? v.bind(t) : v;
        },
      });
    };
    const args: EpOpsArgs = { tokens: 16, dim: 4, hidden: 4, sharedHidden: 4, experts: 4, topk: 2, reps: 0, seed: 3 };
    const res = await runRanks(
      world,
      (ctx: RankContext<EpOpsArgs>) => rankMain({ ...ctx, world: broken(ctx.world) }),
      args,
    );
    const r0 = (res.outcomes[0] as { value: EpOpsRankResult }).value;
    const { text: colored, wrong } = formatEpOps(r0, 'inproc', args);
    const text = colored.replace(/\x1b\[[0-9;]*m/g, '');
    expect(wrong, text).toEqual(['a2a']);
    // The row's output goes home to rank 1; the expert on rank 0 saw the wrong input, so its weight grads are off.
    expect(text).toMatch(/a2a +forward: output +FAILED on rank 1 /);
    expect(text).toMatch(/a2a +backward: expert weight grads +FAILED on rank 0 /);
    expect(text).toMatch(/a2a +backward: shared expert grads +ok/);
    expect(text).toMatch(/allgather-padded +forward: output +ok/);
  });
});

for (const n of [2, 4]) {
  describe.skipIf(mpiUnavailable() !== null)(`moe-actors ep-ops under mpiexec.mpich -n ${n}`, () => {
    it('mpi: every strategy equals one rank', { timeout: 90_000 }, async () => {
      const r = await cli(['ep-ops', '--transport', 'mpi', ...SMALL], { mpi: n });
      expect(r.code, show(r)).toBe(0);
      expect(r.stdout).toContain(`ep-ops: ${n} ranks on mpi (mpi/full)`);
      expect(verdicts(r)).toEqual(ALL_OK);
    });

    it.skipIf(cclSkip(`in test/cli/ep-ops.test.ts (ep-ops on ccl at ${n} ranks)`))(
      'ccl: every strategy equals one rank on oneCCL',
      { timeout: 180_000 },
      async () => {
        const r = await cli(['ep-ops', '--transport', 'ccl', ...SMALL], { mpi: n });
        expect(r.code, show(r)).toBe(0);
        expect(r.stdout).toContain(`ep-ops: ${n} ranks on ccl (ccl/full)`);
        expect(verdicts(r)).toEqual(ALL_OK);
      },
    );
  });
}
