// Before a run reuses a run folder that already holds checkpoints: no silent restart, and no old checkpoint lost
// before a newer one is committed.
//
// - If the folder has step-N checkpoints and none verifies, the run stops and names each one with why it failed
//   (their shards may be intact; a new run from step 1 would overwrite them) — unless the user asks to start over
//   (--start-over): then every old step folder is moved aside, not deleted, into superseded-attempt-<k>/.
// - Step folders newer than the checkpoint the run resumes from (a crashed write, a corrupted commit) would be
//   written over when the run reaches their step again; they are moved aside too.
// - Each launch in a run folder is an attempt, numbered in metrics.jsonl, so a step replayed after a resume is a
//   second row of another attempt, never a duplicate of the same one.

import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, type JobConfig } from './job-config.ts';
import { latestComplete, type PartialCheckpoint } from './checkpoint/index.ts';
import { STEP_DIR_RE } from './checkpoint/format.ts';

export const START_OVER_FLAG = '--start-over';

/** The attempt number of a new launch in `runDir`: one more than the highest in its metrics.jsonl (old rows: 1). */
export function nextAttempt(runDir: string): number {
  const p = join(runDir, 'metrics.jsonl');
  if (!existsSync(p)) return 1;
  let max = 0;
  let rows = 0;
  for (const line of readFileSync(p, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    rows++;
    const m = /"attempt":(\d+)/.exec(line);
    max = Math.max(max, m ? Number(m[1]) : 1);
  }
  return rows === 0 ? 1 : max + 1;
}

function stepFolders(folder: string): { step: number; name: string }[] {
  if (!existsSync(folder)) return [];
  return readdirSync(folder)
    .flatMap((name) => {
      const m = STEP_DIR_RE.exec(name);
      return m && statSync(join(folder, name)).isDirectory() ? [{ step: Number(m[1]), name }] : [];
    })
    .sort((a, b) => a.step - b.step);
}

function moveAside(folder: string, names: readonly string[], attempt: number): string {
  const dest = join(folder, `superseded-attempt-${attempt}`);
  mkdirSync(dest, { recursive: true });
  for (const n of names) renameSync(join(folder, n), join(dest, n));
  return dest;
}

/**
 * Checks the run folder's checkpoints before the ranks start (see the header). `log` says what was moved.
 * Returns the step the ranks will resume from (null: none).
 */
export function guardResume(
  cfg: JobConfig,
  runDir: string,
  o: {
    startOver: boolean;
    attempt: number;
    log: (m: string) => void /** false: check only (MPI ranks other than 0). */;
    move?: boolean;
  },
): number | null {
  if (!cfg.checkpoint.enable) return null;
  const folder = join(runDir, cfg.checkpoint.folder);
  const steps = stepFolders(folder);
  if (steps.length === 0) return null;
  const move = o.move ?? true;
  if (o.startOver) {
    if (!move) return null;
    const dest = moveAside(
      folder,
      steps.map((s) => s.name),
      o.attempt,
    );
    o.log(
      `${START_OVER_FLAG}: the earlier checkpoints (${steps.map((s) => s.name).join(', ')}) were moved to ${dest}; training starts at step 1`,
    );
    return null;
  }
  // load_step picks one checkpoint; the ranks check it and name every complete step when it is not there.
  if (cfg.checkpoint.load_step >= 0) return cfg.checkpoint.load_step;
  const failed: PartialCheckpoint[] = [];
  const pick = latestComplete(folder, { skipped: (p) => failed.push(p) });
  if (!pick) {
    throw new ConfigError(
      `${folder} holds ${steps.length} checkpoint${steps.length === 1 ? '' : 's'} and none verifies, so this run cannot resume:\n` +
        failed.map((p) => `  step-${p.step}: ${p.reason}`).join('\n') +
        `\nnothing was changed. Repair or remove them, or add ${START_OVER_FLAG} to train from step 1 (they are then moved aside into ${join(folder, `superseded-attempt-${o.attempt}`)}, not deleted)`,
    );
  }
  const newer = steps.filter((s) => s.step > pick.step);
  if (newer.length && move) {
    const dest = moveAside(
      folder,
      newer.map((s) => s.name),
      o.attempt,
    );
    for (const p of failed)
      o.log(
        `resume: ignoring incomplete checkpoint ${p.dir}: ${p.reason}; moved to ${join(dest, `step-${p.step}`)} so the resumed run does not write over it`,
      );
  }
  return pick.step;
}
