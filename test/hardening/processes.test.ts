// Hardening cases that need real runs: signals to a training process (threads and inproc), a delay fault longer
// than the collective timeout, and resumes of a real run (no silent restart, attempts in metrics.jsonl). Each is a
// corpus case (harness.ts): exit status, key words, nothing outside the run folder changed, earlier checkpoint kept.

import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, it } from 'vitest';
import { LOCK_NAME } from '../../src/train/run-lock.ts';
import { runTraining } from '../../src/train/trainer.ts';
import { attempt, checkCase, cleanup, type Case, type Outcome, type Sandbox } from './harness.ts';

const BIN = fileURLToPath(new URL('../../bin/moe-actors.mjs', import.meta.url));
const SMALL = [
  '--parallelism.data_parallel_shard_degree',
  '2',
  '--parallelism.expert_parallel_degree',
  '2',
  '--training.seq_len',
  '32',
  '--training.local_batch_size',
  '2',
];

/** Starts a long training run in the sandbox's run folder, sends `sig` once it logged a step, returns its outcome. */
function signalled(sb: Sandbox, transport: string, sig: NodeJS.Signals): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const args = [
      BIN,
      'train',
      '--transport',
      transport,
      '--ranks',
      '2',
      ...SMALL,
      '--training.steps',
      '100000',
      '--job.dump_folder',
      sb.root,
      '--job.run_name',
      'run',
      '--metrics.log_freq',
      '1',
    ];
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    });
    let out = '';
    let sent = false;
    const onData = (d: Buffer) => {
      out += d.toString();
      if (!sent && /step:\s+2 /.test(out)) {
        sent = true;
        child.kill(sig);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(
      () => (child.kill('SIGKILL'), reject(new Error(`no step logged or no exit within 150 s:\n${out}`))),
      150_000,
    );
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const lockLeft = existsSync(join(sb.run, LOCK_NAME)) ? '\nLOCK LEFT' : '\nlock released';
      const timeline = existsSync(join(sb.run, 'timeline.html')) ? '\ntimeline written' : '';
      resolve({ code: code ?? (signal ? 128 : 1), message: out + lockLeft + timeline });
    });
  });
}

const inprocTrain = (sb: Sandbox, extra: string[], opts: { startOver?: boolean; stopAfter?: number } = {}) =>
  runTraining({ transport: 'inproc', ranks: 2, quiet: true, ...opts }, [
    ...SMALL,
    '--job.dump_folder',
    sb.root,
    '--job.run_name',
    'run',
    '--checkpoint.enable',
    '--checkpoint.folder',
    'real',
    '--checkpoint.interval',
    '1',
    '--checkpoint.keep_latest_k',
    '0',
    '--trace.enable',
    'false',
    '--lr_scheduler.warmup_steps',
    '1',
    ...extra,
  ]);

const rows = (sb: Sandbox) =>
  readFileSync(join(sb.run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { step: number; rank: number; attempt: number });

const cases: Case[] = [
  {
    kind: 'signal',
    name: 'SIGTERM on a threads run: reported like Ctrl-C, lock released, timeline written',
    exit: 143,
    words: [
      /interrupted \(SIGTERM\): stopping the ranks/,
      /training interrupted by a signal \(SIGTERM\)/,
      /lock released/,
      /timeline written/,
    ],
    run: (sb) => signalled(sb, 'threads', 'SIGTERM'),
  },
  {
    kind: 'signal',
    name: 'SIGHUP on an inproc run: the same, exit 129',
    exit: 129,
    words: [/interrupted \(SIGHUP\)/, /each rank was stopped where it stood/, /lock released/],
    run: (sb) => signalled(sb, 'inproc', 'SIGHUP'),
  },
  {
    kind: 'fault',
    name: 'a 20 s delay fault with a 0.3 s timeout: the run ends at the timeout and the process exits',
    exit: 0,
    words: [/launch ended in \d+ ms; failed ranks 4/, /process exited after \d+ ms \(< 10000\)/],
    run: () =>
      new Promise<Outcome>((done) => {
        const t0 = performance.now();
        const child = spawn(process.execPath, [fileURLToPath(new URL('./programs/delay-exit.mjs', import.meta.url))], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d));
        child.stderr.on('data', (d: Buffer) => (out += d));
        const kill = setTimeout(() => child.kill('SIGKILL'), 60_000);
        child.on('exit', (code) => {
          clearTimeout(kill);
          const ms = Math.round(performance.now() - t0);
          done({
            code: code ?? 1,
            message: `${out}process exited after ${ms} ms ${ms < 10_000 ? '(< 10000)' : '(too late: a delay timer kept it alive)'}`,
          });
        });
      }),
  },
  {
    kind: 'fault',
    name: 'a real run whose checkpoints all fail verification stops instead of restarting at step 1',
    exit: 1,
    touchesStep1: true,
    words: [
      /real holds 2 checkpoints and none verifies/,
      /step-2: .*corrupted/,
      /step-1: .*corrupted/,
      /--start-over/,
      /rows kept 4/,
    ],
    run: async (sb) => {
      await inprocTrain(sb, ['--training.steps', '2']);
      const n = rows(sb).length;
      for (const s of [1, 2]) appendFileSync(join(sb.run, 'real', `step-${s}`, 'rank0.json'), ' ');
      const o = await attempt(() => inprocTrain(sb, ['--training.steps', '3']));
      return { ...o, message: `${o.message}\nrows kept ${rows(sb).length === n ? n : `changed from ${n}`}` };
    },
  },
  {
    kind: 'fault',
    name: 'a resumed run replays steps as a new attempt: never two rows for one step of one attempt',
    exit: 0,
    touchesStep1: true,
    words: [/^resumed from 2; rows 1:1,2:1,3:2,4:2; duplicates 0$/],
    run: (sb) =>
      attempt(async () => {
        await inprocTrain(sb, ['--training.steps', '4'], { stopAfter: 2 });
        const r = await inprocTrain(sb, ['--training.steps', '4']);
        const rs = rows(sb).filter((x) => x.rank === 0);
        const keys = rows(sb).map((x) => `${x.step}/${x.rank}/${x.attempt}`);
        return `resumed from ${r!.results[0]!.resumedFrom}; rows ${rs.map((x) => `${x.step}:${x.attempt}`).join(',')}; duplicates ${keys.length - new Set(keys).size}`;
      }),
  },
];

afterAll(cleanup);

describe('hardening corpus: signals and faults (real runs)', () => {
  for (const c of cases) it(c.name, () => checkCase(c), 180_000);
});
