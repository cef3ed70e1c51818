// Resuming in a run folder (resume-guard.ts) and the resource check before ranks start (resource-check.ts).

import { existsSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadJobConfig } from '../../../src/train/job-config.ts';
import { guardResume, nextAttempt } from '../../../src/train/resume-guard.ts';
import { checkResources } from '../../../src/train/resource-check.ts';
import { verifyCheckpoint } from '../../../src/train/checkpoint/index.ts';
import type { Plan } from '../../../src/protocols/planner.ts';
import { attempt, type Case, type Sandbox } from '../harness.ts';

const cfg = (extra: string[] = []) => loadJobConfig(null, ['--checkpoint.enable', ...extra]);
const corrupt = (dir: string) => appendFileSync(join(dir, 'rank1.safetensors'), 'x');

function guard(sb: Sandbox, o: { startOver?: boolean; extra?: string[] } = {}) {
  const said: string[] = [];
  return attempt(() => {
    const step = guardResume(cfg(o.extra), sb.run, {
      startOver: !!o.startOver,
      attempt: nextAttempt(sb.run),
      log: (m) => said.push(m),
    });
    return `resume ${step}\n${said.join('\n')}`;
  });
}

export const resumeCases: Case[] = [
  {
    kind: 'resume',
    name: 'no checkpoint verifies: stop and say which failed and why',
    exit: 1,
    touchesStep1: true,
    words: [
      /holds 2 checkpoints and none verifies, so this run cannot resume/,
      /step-2: .*rank1\.safetensors is corrupted: \d+ bytes/,
      /step-1: .*rank1\.safetensors is corrupted/,
      /nothing was changed/,
      /--start-over/,
    ],
    run: async (sb) => {
      corrupt(sb.step1);
      corrupt(sb.step2);
      const o = await guard(sb);
      if (!existsSync(sb.step1) || !existsSync(sb.step2))
        throw new Error('a refused resume moved or deleted a checkpoint');
      return o;
    },
  },
  {
    kind: 'resume',
    name: '--start-over moves the old checkpoints aside, deletes nothing',
    exit: 0,
    touchesStep1: true,
    words: [
      /^resume null/,
      /--start-over: the earlier checkpoints \(step-1, step-2\) were moved to .*superseded-attempt-1/,
    ],
    run: async (sb) => {
      corrupt(sb.step2);
      const o = await guard(sb, { startOver: true });
      verifyCheckpoint(join(sb.folder, 'superseded-attempt-1', 'step-1'), 'checksum', 1);
      if (existsSync(sb.step1)) throw new Error('step-1 is still in place');
      return o;
    },
  },
  {
    kind: 'resume',
    name: 'a newer step that fails verification is moved aside before the resumed run reaches it',
    exit: 0,
    words: [
      /^resume 1/,
      /resume: ignoring incomplete checkpoint .*step-2: .*corrupted.*; moved to .*superseded-attempt-1\/step-2 so the resumed run does not write over it/,
    ],
    run: async (sb) => {
      corrupt(sb.step2);
      const o = await guard(sb);
      if (!existsSync(join(sb.folder, 'superseded-attempt-1', 'step-2', 'rank1.safetensors')))
        throw new Error('step-2 was not kept');
      return o;
    },
  },
  {
    kind: 'resume',
    name: 'all verify: resume from the newest, nothing moved',
    exit: 0,
    words: [/^resume 2\n$/],
    run: (sb) => guard(sb),
  },
  {
    kind: 'resume',
    name: 'an empty run folder: nothing to resume, nothing said',
    exit: 0,
    words: [/^resume null\n$/],
    touchesStep1: true,
    run: (sb) => (rmSync(sb.folder, { recursive: true }), guard(sb)),
  },
  {
    kind: 'resume',
    name: 'load_step is left to the ranks (they name every complete step)',
    exit: 0,
    words: [/^resume 1/],
    run: (sb) => guard(sb, { extra: ['--checkpoint.load_step', '1'] }),
  },
  {
    kind: 'resume',
    name: 'attempts are numbered from metrics.jsonl',
    exit: 0,
    words: [/^1 2 4$/],
    run: (sb) =>
      attempt(() => {
        const a = nextAttempt(sb.run);
        writeFileSync(join(sb.run, 'metrics.jsonl'), '{"step":1,"rank":0}\n');
        const b = nextAttempt(sb.run);
        appendFileSync(join(sb.run, 'metrics.jsonl'), '{"step":1,"rank":0,"attempt":3}\n');
        return `${a} ${b} ${nextAttempt(sb.run)}`;
      }),
  },
];

const plan = (total: number) =>
  ({
    memory: { params: 0, grads: 0, optimizer: 0, unshardedPeak: 0, activationsEstimate: total, total },
  }) as unknown as Plan;
const GiB = 2 ** 30;
const res = (name: string, o: Parameters<typeof checkResources>[0], exit: number, words: RegExp[]): Case => ({
  kind: 'resource',
  name,
  exit,
  words,
  run: () => attempt(() => (checkResources(o), 'fits')),
});

export const resourceCases: Case[] = [
  res(
    'planned memory × ranks beyond what the host has',
    { plan: plan(3 * GiB), transport: 'threads', ranksOnHost: 4, availableBytes: 8 * GiB },
    1,
    [
      /the plan needs 3\.00 GiB per rank .* × 4 ranks on this host = 12\.19 GiB, but the host has 8\.00 GiB available/,
      /--skip-resource-check/,
    ],
  ),
  res('it fits', { plan: plan(1 * GiB), transport: 'threads', ranksOnHost: 4, availableBytes: 8 * GiB }, 0, [/^fits$/]),
  res(
    'mpi counts the ranks of this host only',
    { plan: plan(3 * GiB), transport: 'mpi', ranksOnHost: 2, availableBytes: 8 * GiB },
    0,
    [/^fits$/],
  ),
  res('65 inproc ranks', { plan: plan(1), transport: 'inproc', ranksOnHost: 65, availableBytes: 64 * GiB }, 1, [
    /65 inproc ranks on one host is more than the 64 allowed: inproc runs every rank on one event loop/,
  ]),
  res(
    '1000 inproc ranks are refused before they run',
    { plan: plan(1), transport: 'inproc', ranksOnHost: 1000, availableBytes: 64 * GiB },
    1,
    [/1000 inproc ranks/],
  ),
  res('65 threads ranks', { plan: plan(1), transport: 'threads', ranksOnHost: 65, availableBytes: 64 * GiB }, 1, [
    /worker thread with its own V8 heap/,
  ]),
];
