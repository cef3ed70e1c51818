// keep_latest_k: after a new checkpoint is committed, delete complete checkpoints older than the k newest, and
// partial ones older than the newest complete one (leftovers of crashed writes). A partial checkpoint newer than
// the newest complete one is never touched: it may be a write in progress.

import { rmSync } from 'node:fs';
import { listCheckpoints, type ListOptions } from './list.ts';

export interface PruneResult {
  removed: { step: number; dir: string; why: string }[];
  kept: number[];
}

/** keepLatestK ≤ 0 keeps every complete checkpoint (torchtitan's keep_latest_k = 0). */
export function pruneCheckpoints(
  folder: string,
  keepLatestK: number,
  opts: ListOptions = { verify: 'size' },
): PruneResult {
  const { complete, partial } = listCheckpoints(folder, opts);
  const removed: PruneResult['removed'] = [];
  if (complete.length === 0) return { removed, kept: [] };
  const newest = complete[complete.length - 1]!.step;
  const keep = keepLatestK > 0 ? complete.slice(-keepLatestK) : complete;
  const keepSteps = new Set(keep.map((c) => c.step));
  for (const c of complete) {
    if (!keepSteps.has(c.step)) {
      rmSync(c.dir, { recursive: true, force: true });
      removed.push({ step: c.step, dir: c.dir, why: `older than the ${keepLatestK} newest` });
    }
  }
  for (const p of partial) {
    if (p.step < newest) {
      rmSync(p.dir, { recursive: true, force: true });
      removed.push({ step: p.step, dir: p.dir, why: `partial (${p.reason})` });
    }
  }
  return { removed, kept: [...keepSteps].sort((a, b) => a - b) };
}
