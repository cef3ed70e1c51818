// Finding checkpoints: every step-<n> folder under the checkpoint folder is either complete or partial, and a
// partial one always comes with the reason (no manifest, missing file, size or checksum mismatch) so a resume
// can say why it skipped it.

import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError, STEP_DIR_RE, type Manifest } from './format.ts';
import { verifyCheckpoint, type VerifyLevel } from './verify.ts';

export interface CompleteCheckpoint {
  step: number;
  dir: string;
  manifest: Manifest;
}

export interface PartialCheckpoint {
  step: number;
  dir: string;
  reason: string;
}

export interface CheckpointListing {
  /** Ascending by step. */
  complete: CompleteCheckpoint[];
  /** Ascending by step. */
  partial: PartialCheckpoint[];
}

export interface ListOptions {
  /** "checksum" (default) reads every file; "size" only stats them. */
  verify?: VerifyLevel;
}

function stepDirs(folder: string): { step: number; dir: string }[] {
  if (!existsSync(folder)) return [];
  const out: { step: number; dir: string }[] = [];
  for (const name of readdirSync(folder)) {
    const m = STEP_DIR_RE.exec(name);
    const dir = join(folder, name);
    if (m && statSync(dir).isDirectory()) out.push({ step: Number(m[1]), dir });
  }
  return out.sort((a, b) => a.step - b.step);
}

export function listCheckpoints(folder: string, opts: ListOptions = {}): CheckpointListing {
  const listing: CheckpointListing = { complete: [], partial: [] };
  for (const { step, dir } of stepDirs(folder)) {
    try {
      listing.complete.push({ step, dir, manifest: verifyCheckpoint(dir, opts.verify ?? 'checksum', step) });
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      listing.partial.push({ step, dir, reason: e.message });
    }
  }
  return listing;
}

/**
 * The newest complete checkpoint (checking newest first, so older ones are not read needlessly), or null.
 * `skipped` receives every newer partial checkpoint with its reason.
 */
export function latestComplete(
  folder: string,
  opts: ListOptions & { skipped?: (p: PartialCheckpoint) => void } = {},
): CompleteCheckpoint | null {
  for (const { step, dir } of stepDirs(folder).reverse()) {
    try {
      return { step, dir, manifest: verifyCheckpoint(dir, opts.verify ?? 'checksum', step) };
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      opts.skipped?.({ step, dir, reason: e.message });
    }
  }
  return null;
}
