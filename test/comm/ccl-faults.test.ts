// A rank that fails in the middle of an EP dispatch on the ccl transport ends the whole job within the timeout,
// and the survivor says where it waited: the mpi transport's failure rule (fault note, MPI_Abort) holds with
// oneCCL carrying the collective. A SIGKILLed rank cannot send a note: the job still ends, well before its
// deadline, does not pass for success, and the survivor says which rank died and which collective it waited in
// (scripts/mpi-rank.sh keeps Hydra from killing it first; world.ts watches the node's ranks) — also when the kill
// hits a real training step's a2a dispatch (RankHost and the moe-layer machines over oneCCL;
// programs/ccl-dispatch-kill.ts). No process of any of these jobs may be left running.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { spawnMpi } from '../../src/comm/mpi/spawn.ts';
import { cclSkip } from './ccl-skip.ts';
import type { EpKillArgs } from './programs/ep-kill.ts';
import type { DispatchKillArgs } from './programs/ccl-dispatch-kill.ts';
import type { ParityCaseJson } from '../runtime/programs/parity-driver.ts';
import { distributedCaseOf, syntheticBatch } from '../models/fixtures.ts';

/** Processes still running whose command line names this dump folder (every rank's does): none may be left. */
const leftBehind = (dumpDir: string) => spawnSync('pgrep', ['-af', dumpDir], { encoding: 'utf8' }).stdout.trim();

const entry = { module: fileURLToPath(new URL('./programs/ep-kill.ts', import.meta.url)) };
const tmp = mkdtempSync(join(tmpdir(), 'moe-ccl-faults-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(cclSkip('test/comm/ccl-faults.test.ts (a rank failing mid-dispatch)'))(
  'ccl transport: a rank fails mid-dispatch',
  () => {
    it('throws with its all_to_all_v in flight: the job ends, the survivor reports the dispatch it waited in', {
      timeout: 90_000,
    }, async () => {
      const timeoutMs = 20_000;
      const res = await spawnMpi<number>({
        n: 2,
        transport: 'ccl',
        entry,
        args: { mode: 'throw', victim: 1, atIter: 3, iters: 10 } satisfies EpKillArgs,
        world: { timeoutMs, dumpDir: join(tmp, 'throw') },
        jobTimeoutMs: 60_000,
      });
      expect(res.killed).toBe(false);
      expect(res.ms).toBeLessThan(timeoutMs);
      expect(res.exitCode).not.toBe(0);
      const r1 = res.outcomes[1]!;
      const r0 = res.outcomes[0]!;
      expect(r1.ok).toBe(false);
      expect(r0.ok).toBe(false);
      expect((r1 as { error: string }).error).toMatch(/injected failure on rank 1 in dispatch 3/);
      expect((r0 as { error: string }).error).toMatch(
        /\[peer-dead\]: rank 1 reported: rank 1 failed: Error: injected failure.*all_to_all_v #[3-5] on group ep/,
      );
      expect(res.diagnosis).toMatch(/^first failure: rank 1: Error: injected failure/);
      expect(leftBehind(join(tmp, 'throw')), 'processes of the job left behind').toBe('');
    });

    it('SIGKILL with its all_to_all_v in flight: the survivor names the dead rank and its dispatch, dumps, ends the job', {
      timeout: 90_000,
    }, async () => {
      const res = await spawnMpi<number>({
        n: 2,
        transport: 'ccl',
        entry,
        args: { mode: 'sigkill', victim: 1, atIter: 3, iters: 10 } satisfies EpKillArgs,
        world: { timeoutMs: 20_000, dumpDir: join(tmp, 'kill') },
        jobTimeoutMs: 60_000,
      });
      expect(res.killed).toBe(false);
      expect(res.ms).toBeLessThan(20_000);
      expect(res.exitCode).not.toBe(0);
      expect((res.outcomes[0] as { error: string }).error).toMatch(
        /\[peer-dead\]: this rank was waiting in all_to_all_v #[3-5] on group ep when rank 1 died \(its process \d+ is gone/,
      );
      expect((res.outcomes[1] as { error: string }).error).toMatch(/killed by signal 9/);
      expect(res.stderr).toMatch(
        /moe-actors ccl rank 0: CollectiveError\[peer-dead\].*; flight dump: .*flight-rank-0\.json/,
      );
      expect(existsSync(join(tmp, 'kill', 'flight-rank-0.json'))).toBe(true);
      expect(leftBehind(join(tmp, 'kill')), 'processes of the job left behind').toBe('');
      console.info(
        `sigkill mid-dispatch: ended after ${res.ms.toFixed(0)} ms, exit ${res.exitCode}; rank 0: ${res.outcomes[0]!.ok ? 'ok' : (res.outcomes[0] as { error: string }).error.split('\n', 1)[0]}`,
      );
    });
  },
);

describe.skipIf(cclSkip('test/comm/ccl-faults.test.ts (a rank killed mid-dispatch in a training step)'))(
  'ccl transport: a rank killed in a training step’s EP dispatch',
  () => {
    it('SIGKILL after its 3rd all_to_all_v on group ep (fsdp2-ep2, a2a): the survivor reports where it waited, the job ends', {
      timeout: 120_000,
    }, async () => {
      const f = distributedCaseOf('llama4_shared2_train');
      const b = syntheticBatch(f.model.args.vocab_size, 4, 8, 5);
      const run: ParityCaseJson = {
        name: 'kill',
        job: {
          model: f.model,
          degrees: { dp_shard: 2, ep: 2 },
          dispatch: 'a2a',
          gradReduce: 'sum',
          divideFactor: 1,
          reshard: 'default',
          ac: { mode: 'none' },
          adamw: f.adamw,
          schedule: f.schedule,
          maxNorm: f.maxNorm,
          seed: 0,
          weights: f.weights,
        },
        tokens: Array.from(b.tokens),
        labels: Array.from(b.labels),
        B: 4,
        S: 8,
        microbatches: 1,
        steps: 2,
      };
      const entry = { module: fileURLToPath(new URL('./programs/ccl-dispatch-kill.ts', import.meta.url)) };
      const res = await spawnMpi<unknown>({
        n: 2,
        transport: 'ccl',
        entry,
        args: { run, victim: 1, atCall: 3 } satisfies DispatchKillArgs,
        world: { timeoutMs: 30_000, dumpDir: join(tmp, 'train-kill') },
        jobTimeoutMs: 90_000,
      });
      expect(res.killed, res.stderr.slice(-2000)).toBe(false);
      expect(res.ms, res.stderr.slice(-3000)).toBeLessThan(30_000);
      expect(res.exitCode).not.toBe(0);
      expect(res.outcomes[1]!.ok).toBe(false);
      expect((res.outcomes[0] as { error: string }).error).toMatch(
        /\[peer-dead\]: this rank was waiting in \S+ #\d+ on group \S+ when rank 1 died/,
      );
      expect(existsSync(join(tmp, 'train-kill', 'flight-rank-0.json'))).toBe(true);
      expect(leftBehind(join(tmp, 'train-kill')), 'processes of the job left behind').toBe('');
      console.info(
        `sigkill in a training dispatch: ended after ${res.ms.toFixed(0)} ms, exit ${res.exitCode}; rank 0: ${res.outcomes[0]!.ok ? 'ok' : (res.outcomes[0] as { error: string }).error.split('\n', 1)[0]}`,
      );
    });
  },
);
