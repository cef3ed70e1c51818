// Hang diagnosis through the whole stack: `runTraining` (the tiny job, 4 inproc ranks, EP 4) with rank 2 killed
// when it issues its first EP collective (fault injection: kind 'kill', group 'ep', #1 — the layer-1 counts
// exchange of the first microbatch). Every other rank must fail well within the collective timeout, runTraining
// must throw an error that says who waited for whom (ranks 0,1,3 in all_to_all_v #1 on group ep, rank 2 dead),
// every rank's flight dump must be in the run folder, and the run must still produce timeline.html (and
// trace.json) from the events the ranks recorded up to the failure, with the failure diagnosis in it. Without
// the dead rank's dump — what a crashed process leaves — the same tools name rank 2 as missing.
// Last, torchtitan's two timeouts: a rank slower than timeout_seconds passes start-up and step 1 (they run under
// init_timeout_seconds) and fails step 2; a late rank at a checkpoint barrier is waited for.
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runTraining } from '../../src/train/trainer.ts';
import { loadFlightDumps, runPaths } from '../../src/trace/run-dir.ts';
import { fromFlightDumps } from '../../src/trace/failed-run.ts';
import { viewRun } from '../../src/trace/view.ts';
import { diagnose } from '../../src/comm/inspect.ts';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import { captureOutput, TINY, tmpRoot } from './helpers.ts';

const root = tmpRoot('hang');
afterAll(() => rmSync(root, { recursive: true, force: true }));
const TIMEOUT_S = 5;

describe('a rank dies in its first EP collective', () => {
  it('every other rank fails within the timeout; the error, the flight dumps and the timeline say who waited for whom', async () => {
    const t0 = performance.now();
    const { value: err } = await captureOutput(() =>
      runTraining(
        { config: TINY, transport: 'inproc', quiet: true, faults: [{ kind: 'kill', rank: 2, atSeq: 1, group: 'ep' }] },
        [
          '--job.dump_folder',
          root,
          '--job.run_name',
          'killed',
          '--comm.timeout_seconds',
          String(TIMEOUT_S),
          '--training.steps',
          '2',
        ],
      ).then(
        () => null,
        (e: unknown) => e as Error,
      ),
    );
    const ms = performance.now() - t0;
    expect(err, 'runTraining must throw').toBeInstanceOf(Error);
    const text = err!.message;
    console.info(`failed after ${ms.toFixed(0)} ms (timeout ${TIMEOUT_S} s):\n${text}`);
    expect(ms, 'the whole run, startup included').toBeLessThan(20_000);
    expect(text).toMatch(/^training failed on ranks 0, 1, 2, 3: /);
    // Who waited for whom: the survivors in the op on the group, the dead rank and where it died.
    expect(text).toContain(
      'first failure: rank 2 died (killed by fault injection when it issued all_to_all_v #1 on group ep)',
    );
    expect(text).toMatch(/ranks 0,1,3: all_to_all_v #1 on group ep failed: rank 2 died/);
    expect(text).toMatch(/tag "layer 1 mb 0 counts"/);
    const runDir = join(root, 'killed');
    const flight = runPaths(runDir).flight;
    expect(text).toContain(`flight-recorder dumps: ${flight}`);

    // Dumps of every rank, each with its failed entry on ep #1.
    expect(readdirSync(flight).sort()).toEqual([0, 1, 2, 3].map((r) => `flight-rank-${r}.json`));
    const dumps = loadFlightDumps(runDir);
    // From rank 2's death to the last survivor's failure: well within one collective timeout (inproc fails every
    // group of the dead rank at once, it does not wait for the timeout).
    const ep1 = (r: number) => dumps.find((d) => d.rank === r)!.entries.find((x) => x.group === 'ep' && x.seq === 1)!;
    const died = ep1(2).tCompleted!;
    const spread = Math.max(...[0, 1, 3].map((r) => ep1(r).tCompleted! - died));
    console.info(`survivors failed ${spread.toFixed(1)} ms after rank 2 died (timeout ${TIMEOUT_S} s)`);
    expect(spread).toBeLessThan(TIMEOUT_S * 1000);
    for (const r of [0, 1, 3]) expect(ep1(r).error, `rank ${r}`).toMatch(/rank 2 died/);
    for (const d of dumps) {
      const e = d.entries.find((x) => x.group === 'ep' && x.seq === 1);
      expect(e?.state, `rank ${d.rank}'s ep #1`).toBe('failed');
      expect(e?.op).toBe('all_to_all_v');
      // Nothing on ep completed anywhere: the dead rank's first EP call was everyone's first.
      expect(d.entries.filter((x) => x.group === 'ep' && x.state === 'completed')).toEqual([]);
    }

    // The failed run wrote its own timeline (and says where); viewRun redraws it from the recorded events.
    expect(existsSync(runPaths(runDir).timeline)).toBe(true);
    expect(text).toContain(`timeline of the failed run: ${runPaths(runDir).timeline}`);
    const v = viewRun(runDir);
    expect(v.timeline).toBe(runPaths(runDir).timeline);
    expect(v.events).toBeGreaterThan(20);
    expect(v.failure).toMatch(/rank 2 died/);
    const html = readFileSync(v.timeline, 'utf8');
    expect(html).toMatch(/^<!doctype html>/i);
    expect(html).toContain('rank 2 died');
    expect(JSON.parse(readFileSync(v.trace, 'utf8')).traceEvents.length).toBeGreaterThan(20);
    // The events show ranks 0,1,3 entering ep #1 and never completing it.
    const starts = new Map<number, number>();
    for (const n of readdirSync(runPaths(runDir).events)) {
      for (const line of readFileSync(join(runPaths(runDir).events, n), 'utf8').split('\n')) {
        if (!line.includes('"group":"ep"')) continue;
        const e = JSON.parse(line) as { rank: number; seq: number; phase: string; error?: string };
        if (e.seq === 1 && e.phase === 'start') starts.set(e.rank, (starts.get(e.rank) ?? 0) + 1);
        if (e.seq === 1 && e.phase === 'end')
          expect(e.error, `rank ${e.rank} ep #1 ended with an error`).toMatch(/rank 2/);
      }
    }
    for (const r of [0, 1, 3]) expect(starts.get(r), `rank ${r} started ep #1`).toBe(1);

    // What a crashed process leaves: no dump from rank 2. The same analysis then names it as the missing member.
    const survivors = dumps.filter((d) => d.rank !== 2);
    const dx = diagnose(survivors, { worldSize: 4 });
    expect(dx.text).toMatch(
      /group ep \(ranks 0,1,2,3\): Not all ranks joining collective #1 .*missing ranks: \{2\} \(no dump from rank 2\); joined: \{0,1,3\}/,
    );
    const panel = fromFlightDumps(survivors);
    expect(panel.ranks.find((r) => r.rank === 2)!.status).toBe('missing');
    expect(panel.ranks.find((r) => r.rank === 2)!.where).toMatch(
      /never joined all_to_all_v #1 on group ep \(layer 1 mb 0 counts\); ranks 0,1,3 waited for it/,
    );
  });
});

describe('a hang outside collectives', () => {
  // The reshard-"always" bug (fixed: the fsdp-unit machine queues an UNSHARD that arrives while resharding) hung every rank on an XState event the machine had dropped:
  // no rank was in a collective, so no collective timeout and no desync detection could see it. inproc's launch
  // now gives up on a world that stays still (no collective issued or pending, no rank finishing, the event loop
  // idle) for one collective timeout; RankHost's step watchdog covers the same case on threads and mpi.
  it('every rank awaiting something that never settles (no collective in flight) ends the launch within a few timeouts', async () => {
    const world = createInprocWorld(2, { timeoutMs: 200 });
    let release: () => void = () => {};
    const never = new Promise<void>((r) => (release = r));
    const launched = runRanks(world, async () => never, null);
    const outcome = await Promise.race([
      launched.then(() => 'ended'),
      new Promise((r) => setTimeout(() => r('still waiting'), 1500)),
    ]);
    release(); // let the launch finish so that nothing is left running after the test
    await launched;
    expect(outcome).toBe('ended');
  });
});

describe('torchtitan’s two timeouts', () => {
  // The tiny job issues 8 collectives on ep per step (#1–#8 in step 1, #9 opens step 2) and, with a checkpoint every
  // step, two barriers on world per step (#3 is the first barrier of step 2). Delays of 2.5 s against a per-step
  // timeout of 1 s leave a wide margin on a loaded machine.
  it('start-up and the first step wait up to init_timeout_seconds; later steps fail after timeout_seconds', {
    timeout: 60_000,
  }, async () => {
    // Rank 2 arrives 2.5 s late at the first EP collective of step 1 and of step 2.
    const late = (atSeq: number) => ({ kind: 'delay' as const, rank: 2, ms: 2500, group: 'ep', atSeq });
    const t0 = performance.now();
    const { value: err } = await captureOutput(() =>
      runTraining({ config: TINY, transport: 'inproc', quiet: true, faults: [late(1), late(9)] }, [
        '--job.dump_folder',
        root,
        '--job.run_name',
        'two-timeouts',
        '--comm.timeout_seconds',
        '1',
        '--comm.init_timeout_seconds',
        '30',
        '--training.steps',
        '3',
        '--trace.enable',
        'false',
      ]).then(
        () => null,
        (e: unknown) => e as Error,
      ),
    );
    expect(err, 'the run must fail in step 2').toBeInstanceOf(Error);
    console.info(
      `failed after ${(performance.now() - t0).toFixed(0)} ms:\n${err!.message.split('\n').slice(0, 3).join('\n')}`,
    );
    expect(err!.message).toMatch(/(timeout after|timed out after) 1000 ms in all_to_all_v #9 on group ep/);
    const steps = readFileSync(join(root, 'two-timeouts', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).step as number);
    expect(new Set(steps), 'step 1 completed under the init timeout, nothing after it').toEqual(new Set([1]));
  });
  it('the barriers around a checkpoint write keep the init timeout (a slow writer is not a hang)', {
    timeout: 60_000,
  }, async () => {
    // Rank 1 reaches the first checkpoint barrier of step 2 2.5 s late.
    const { value: out } = await captureOutput(() =>
      runTraining(
        {
          config: TINY,
          transport: 'inproc',
          quiet: true,
          faults: [{ kind: 'delay', rank: 1, ms: 2500, group: 'world', atSeq: 3 }],
        },
        [
          '--job.dump_folder',
          root,
          '--job.run_name',
          'slow-writer',
          '--comm.timeout_seconds',
          '1',
          '--comm.init_timeout_seconds',
          '30',
          '--training.steps',
          '3',
          '--checkpoint.enable',
          '--checkpoint.interval',
          '1',
          '--trace.enable',
          'false',
        ],
      ),
    );
    expect(out!.results[0]!.steps.map((s) => s.step)).toEqual([1, 2, 3]);
    expect(out!.results[0]!.checkpoints).toHaveLength(3);
  });
});
