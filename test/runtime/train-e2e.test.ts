// `moe-actors train` end to end on every transport: the tiny job (test/runtime/fixtures/tiny_ep4.toml: Llama4
// debugmodel shrunk to dim 64 / 2 layers, 8 experts, bundled text) for 6 steps with checkpoints every 2.
//   inproc and threads: runTraining in this process (4 ranks, EP 4 + FSDP 4);
//   mpi: the real CLI under `mpiexec.mpich -n 2` (EP 2 + FSDP 2), compared with the same job on inproc.
// Each run must: lower the loss on the text sample, print torchtitan's console line for every step, write a
// metrics.jsonl whose every line parses with torchtitan's keys, and leave plan.txt, trace.json, timeline.html and
// complete checkpoints (manifest with a checksum per file, checked here against the files).
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { readEventFile, runPaths } from '../../src/trace/run-dir.ts';
import { join } from 'node:path';
import { runTraining, type TrainOutcome } from '../../src/train/trainer.ts';
import {
  captureOutput,
  checkCheckpoints,
  checkMetrics,
  checkRunFolder,
  consoleSteps,
  describeChild,
  expectLossDecreases,
  MPI_SKIP,
  readJsonl,
  runTrainCli,
  runTrainMpi,
  stripAnsi,
  TINY,
  tmpRoot,
} from './helpers.ts';

const root = tmpRoot('e2e');
afterAll(() => rmSync(root, { recursive: true, force: true }));
const STEPS = [1, 2, 3, 4, 5, 6];
const CKPT = ['--checkpoint.enable', '--checkpoint.interval', '2'];

/** runTraining with its output captured (console lines, also from worker threads). */
async function trainCaptured(
  transport: 'inproc' | 'threads',
  name: string,
  extra: string[] = [],
): Promise<{ out: TrainOutcome; stdout: string; ms: number }> {
  const t0 = performance.now();
  const c = await captureOutput(
    () =>
      runTraining({ config: TINY, transport, quiet: true }, [
        '--job.dump_folder',
        root,
        '--job.run_name',
        name,
        ...extra,
      ]),
    (out) => (stripAnsi(out).match(/^step: /gm)?.length ?? 0) >= STEPS.length,
  );
  return { out: c.value!, stdout: c.stdout, ms: performance.now() - t0 };
}

/** What every transport's run must show; returns the per-step global losses from metrics.jsonl. */
function checkRun(runDir: string, ranks: number, stdout: string, resultsLosses: number[] | null): number[] {
  const metrics = checkMetrics(runDir, ranks, STEPS);
  const losses = STEPS.map((s) => metrics.get(s)!.loss);
  expectLossDecreases(losses);
  if (resultsLosses) expect(resultsLosses).toEqual(losses);
  // One console line per step, on rank 0 only, with the metrics' loss and grad norm at the printed precision.
  const lines = consoleSteps(stdout);
  expect([...lines.keys()]).toEqual(STEPS);
  for (const s of STEPS) {
    expect(lines.get(s)!.loss).toBe(Number(metrics.get(s)!.loss.toFixed(5)));
    expect(lines.get(s)!.gradNorm).toBe(Number(metrics.get(s)!.gradNorm.toFixed(4)));
  }
  expect(stdout.match(/^(\u001b\[[0-9;]*m)*step: /gm)?.length, 'only rank 0 prints the console line').toBe(
    STEPS.length,
  );
  checkRunFolder(runDir, ranks);
  checkCheckpoints(join(runDir, 'checkpoint'), [2, 4, 6], ranks);
  return losses;
}

const relDiff = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

describe('moe-actors train end to end', () => {
  let inprocLosses: number[] = [];

  it('inproc: 4 ranks, EP 4 + FSDP 4, 6 steps, checkpoints every 2', async () => {
    const { out, stdout, ms } = await trainCaptured('inproc', 'inproc', CKPT);
    expect(out.results).toHaveLength(4);
    for (const r of out.results) expect(r.steps.map((s) => s.step)).toEqual(STEPS);
    expect(out.plan.dispatch.choice).toBe('a2a');
    expect(out.trace).toBe(join(out.runDir, 'trace.json'));
    expect(out.timeline).toBe(join(out.runDir, 'timeline.html'));
    inprocLosses = checkRun(
      out.runDir,
      4,
      stdout,
      out.results[0]!.steps.map((s) => s.loss),
    );
    // Bytes per step per group as measured by every rank = the plan's prediction (FSDP traffic is the same on
    // every rank and every step). The plan leaves out the grad-norm² all_reduce on fsdp: 2 doubles in, 2 out.
    const recs = readJsonl(join(out.runDir, 'metrics.jsonl'));
    expect(recs).toHaveLength(24);
    for (const r of recs) {
      expect(r['comm/fsdp_reduce(bytes)'], `fsdp_reduce step ${r.step} rank ${r.rank}`).toBe(
        out.plan.bytesPerStep.fsdp_reduce,
      );
      expect(r['comm/fsdp(bytes)'], `fsdp step ${r.step} rank ${r.rank}`).toBe(out.plan.bytesPerStep.fsdp! + 32);
    }
    console.info(`inproc 4 ranks: ${ms.toFixed(0)} ms, losses ${inprocLosses.map((l) => l.toFixed(4)).join(' ')}`);
  });

  it('threads: the same job on 4 worker threads; losses match inproc within fp32 reassociation', async () => {
    const { out, stdout, ms } = await trainCaptured('threads', 'threads', CKPT);
    expect(out.results).toHaveLength(4);
    const losses = checkRun(
      out.runDir,
      4,
      stdout,
      out.results[0]!.steps.map((s) => s.loss),
    );
    console.info(`threads 4 ranks: ${ms.toFixed(0)} ms, losses ${losses.map((l) => l.toFixed(4)).join(' ')}`);
    expect(inprocLosses).toHaveLength(6);
    for (let i = 0; i < 6; i++) expect(relDiff(losses[i]!, inprocLosses[i]!), `step ${i + 1}`).toBeLessThan(1e-5);
  });

  it.skipIf(MPI_SKIP !== null)(
    `mpi: the CLI under mpiexec.mpich -n 2 (EP 2 + FSDP 2) matches the same job on inproc${MPI_SKIP ? ` — ${MPI_SKIP}` : ''}`,
    async () => {
      const layout = ['--parallelism.data_parallel_shard_degree', '2', '--parallelism.expert_parallel_degree', '2'];
      const r = await runTrainMpi(
        2,
        [
          '--config',
          TINY,
          '--transport',
          'mpi',
          '--job.run_name',
          'mpi2',
          '--job.dump_folder',
          root,
          ...layout,
          ...CKPT,
        ],
        { timeoutMs: 45_000 },
      );
      expect(r.code, describeChild(r)).toBe(0);
      const runDir = join(root, 'mpi2');
      const losses = checkRun(runDir, 2, r.stdout, null);
      expect(stripAnsi(r.stdout)).toContain(`run folder: ${runDir}`);
      expect(stripAnsi(r.stdout)).toMatch(/^done: 6 steps, final loss /m);
      // The same job on 2 inproc ranks: MPI's sums may associate differently, nothing more.
      const ref = await captureOutput(() =>
        runTraining({ config: TINY, transport: 'inproc', ranks: 2, quiet: true }, [
          '--job.dump_folder',
          root,
          '--job.run_name',
          'inproc2',
          ...layout,
          '--trace.enable',
          'false',
        ]),
      );
      const refLosses = ref.value!.results[0]!.steps.map((s) => s.loss);
      console.info(
        `mpi 2 ranks: ${r.ms.toFixed(0)} ms, losses ${losses.map((l) => l.toFixed(4)).join(' ')} (inproc ${refLosses.map((l) => l.toFixed(4)).join(' ')})`,
      );
      for (let i = 0; i < 6; i++) expect(relDiff(losses[i]!, refLosses[i]!), `step ${i + 1}`).toBeLessThan(1e-5);
    },
  );
  it('[trace] max_events caps each rank’s event file; the run and its timeline complete and say the trace is cut', async () => {
    const c = await captureOutput(() =>
      runTraining({ config: TINY, transport: 'inproc', quiet: false }, [
        '--job.dump_folder',
        root,
        '--job.run_name',
        'capped',
        '--training.steps',
        '2',
        '--trace.max_events',
        '100',
      ]),
    );
    const out = c.value!;
    expect(out.results[0]!.steps).toHaveLength(2);
    for (let r = 0; r < 4; r++) {
      const f = readEventFile(runPaths(out.runDir).rankEvents(r));
      expect(f.events, `rank ${r}`).toHaveLength(100);
      expect(f.meta!.truncatedAfter).toBe(100);
    }
    expect(existsSync(out.timeline!)).toBe(true);
    expect(stripAnsi(c.logs.join('\n'))).toMatch(
      /^trace: .*rank-0\.jsonl: rank 0 recorded more events than \[trace\] max_events = 100; the file holds the first 100/m,
    );
  });
  it('a dataset too small for its data-parallel ranks: the error leads with that cause, not with a peer’s collective failure; re-loops are reported sparingly', async () => {
    const tiny = join(root, 'one-document.txt');
    writeFileSync(tiny, 'x');
    const c = await captureOutput(() =>
      runTraining({ config: TINY, transport: 'inproc', quiet: false }, [
        '--job.dump_folder',
        root,
        '--job.run_name',
        'tiny-data',
        '--training.steps',
        '1',
        '--training.dataset',
        'text',
        '--training.dataset_path',
        tiny,
      ]).then(
        () => null,
        (e: unknown) => e as Error,
      ),
    );
    expect(c.value).toBeInstanceOf(Error);
    expect(c.value!.message.split('\n')[0]).toMatch(
      /^training failed on ranks 0, 1, 2, 3: .*one-document\.txt .*: data-parallel rank [123] of 4 gets no documents \(the dataset has 1\)\. Use a larger dataset/,
    );
    // Rank 0 holds the one 1-byte document and re-loops hundreds of times to fill its batch.
    const reloops = stripAnsi([...c.logs, c.stdout].join('\n')).match(/re-looping \(epoch (\d+)/g) ?? [];
    expect(reloops.length, reloops.join(', ')).toBeGreaterThan(0);
    expect(reloops.length, reloops.join(', ')).toBeLessThanOrEqual(12);
  });
  it('a dataset_path that does not exist is refused before any rank starts, and no run folder is made', async () => {
    const missing = join(root, 'no-such-dataset.txt');
    await expect(
      runTraining({ config: TINY, transport: 'inproc', quiet: true }, [
        '--job.dump_folder',
        root,
        '--job.run_name',
        'no-data',
        '--training.dataset_path',
        missing,
      ]),
    ).rejects.toThrow(`cannot read dataset ${missing}: no such file (set [training] dataset_path)`);
    expect(existsSync(join(root, 'no-data'))).toBe(false);
  });
  it('a dump_folder that cannot be made (under /proc, where Node 20’s recursive mkdir spins forever) fails at once, naming it', async () => {
    const r = await runTrainCli(
      [
        '--config',
        TINY,
        '--job.dump_folder',
        '/proc/moe-actors-no-such-dir',
        '--transport',
        'inproc',
        '--trace.enable',
        'false',
      ],
      { timeoutMs: 30_000 },
    );
    expect(r.timedOut, describeChild(r)).toBe(false);
    expect(r.code, describeChild(r)).toBe(1);
    expect(r.stderr).toContain(
      'moe-actors: [job] dump_folder: cannot create the folder /proc/moe-actors-no-such-dir (ENOENT); choose a writable location',
    );
  });
  it('--fault from the command line: the run fails with the diagnosis and writes the failed run’s timeline; a fault that never applies is reported', async () => {
    const r = await runTrainCli(
      [
        '--config',
        TINY,
        '--job.dump_folder',
        root,
        '--job.run_name',
        'cli-fault',
        '--transport',
        'inproc',
        '--fault',
        'kill:rank=2,group=ep,seq=1',
        '--fault',
        'delay:rank=1,ms=5,group=epp',
      ],
      { timeoutMs: 30_000 },
    );
    expect(r.code, describeChild(r)).toBe(1);
    expect(r.stderr).toContain(
      'first failure: rank 2 died (killed by fault injection when it issued all_to_all_v #1 on group ep)',
    );
    const timeline = join(root, 'cli-fault', 'timeline.html');
    expect(r.stderr).toContain(`timeline of the failed run: ${timeline}`);
    expect(existsSync(timeline)).toBe(true);
    expect(stripAnsi(r.stdout)).toMatch(
      /^fault injection: \{"kind":"delay","rank":1,"ms":5,"group":"epp"\} never applied: rank 1 issued no collective on group epp \(no call was made on a group epp; groups used before the run ended: .*\bep\b/m,
    );
  });
  it('Ctrl-C on a hung run: the ranks are stopped where they stand, the report says where, exit 130', async () => {
    // Rank 2 is held back 60 s at the first EP collective: the run hangs there, well inside its 300 s init timeout.
    let sent = false;
    const r = await runTrainCli(
      [
        '--config',
        TINY,
        '--job.dump_folder',
        root,
        '--job.run_name',
        'ctrl-c',
        '--transport',
        'inproc',
        '--fault',
        'delay:rank=2,ms=60000,group=ep,seq=1',
      ],
      {
        timeoutMs: 30_000,
        onStdout: (all, kill) => {
          if (sent || !all.includes('MFU peak')) return;
          sent = true;
          setTimeout(() => kill('SIGINT'), 1500);
        },
      },
    );
    expect(r.timedOut, describeChild(r)).toBe(false);
    expect(r.code, describeChild(r)).toBe(130);
    expect(r.stderr).toContain('interrupted: stopping the ranks and collecting where each one is');
    expect(r.stderr).toContain(
      'moe-actors: training interrupted by the user (SIGINT); each rank was stopped where it stood:',
    );
    expect(r.stderr).toContain('where the ranks are: ranks 0,1,2,3 are in all_to_all_v #1 on group ep');
    expect(r.ms, 'no 60 s delay timer kept the process alive').toBeLessThan(25_000);
    expect(existsSync(join(root, 'ctrl-c', 'timeline.html'))).toBe(true);
    expect(existsSync(join(root, 'ctrl-c', 'flight', 'flight-rank-2.json'))).toBe(true);
  });
  it('one run per run folder: a second job on a busy --job.run_name is refused; an automatic name taken this second gets -2', async () => {
    // Run A is held 4 s at its first EP collective; B starts on the same folder meanwhile.
    let b: Promise<Awaited<ReturnType<typeof runTrainCli>>> | null = null;
    const a = await runTrainCli(
      [
        '--config',
        TINY,
        '--job.dump_folder',
        root,
        '--job.run_name',
        'busy',
        '--transport',
        'inproc',
        '--training.steps',
        '1',
        '--trace.enable',
        'false',
        '--fault',
        'delay:rank=1,ms=4000,group=ep,seq=1',
      ],
      {
        timeoutMs: 40_000,
        onStdout: (all) => {
          if (!b && all.includes('run folder:'))
            b = runTrainCli(
              [
                '--config',
                TINY,
                '--job.dump_folder',
                root,
                '--job.run_name',
                'busy',
                '--transport',
                'inproc',
                '--training.steps',
                '1',
              ],
              { timeoutMs: 40_000 },
            );
        },
      },
    );
    expect(a.code, describeChild(a)).toBe(0);
    const rb = await b!;
    expect(rb.code, describeChild(rb)).toBe(1);
    expect(rb.stderr).toMatch(
      new RegExp(
        `the run folder ${join(root, 'busy').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by another moe-actors run \\(pid \\d+ on this host, started .*\\); choose another --job.run_name`,
      ),
    );
    expect(existsSync(join(root, 'busy', '.moe-actors.lock')), 'A released its lock').toBe(false);

    // Automatic names are <config>-<yyyymmdd-hhmmss>: occupy the next 60 s of them, so this run must take a -2.
    const auto = join(root, 'auto');
    const stamp = (t: number) => new Date(t).toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-');
    for (let s = 0; s < 60; s++) mkdirSync(join(auto, `tiny_ep4-${stamp(Date.now() + s * 1000)}`), { recursive: true });
    const c = await runTrainCli(
      [
        '--config',
        TINY,
        '--job.dump_folder',
        auto,
        '--transport',
        'inproc',
        '--training.steps',
        '1',
        '--trace.enable',
        'false',
      ],
      { timeoutMs: 40_000 },
    );
    expect(c.code, describeChild(c)).toBe(0);
    expect(stripAnsi(c.stdout)).toMatch(/^run folder: .*\/tiny_ep4-\d{8}-\d{6}-2$/m);
  });
});
