// Kept apart from the transports so that a threads worker or an MPI rank can load its program without importing
// another transport's world.

import { pathToFileURL } from 'node:url';
import type { RankEntry, RankMain } from './launch.ts';

/** Loads `exportName` (default rankMain) of a rank-program module given as a path or a file: URL. */
export async function loadRankMain<A, R>(entry: RankEntry): Promise<RankMain<A, R>> {
  const spec = entry.module.startsWith('file:') ? entry.module : pathToFileURL(entry.module).href;
  const mod = (await import(spec)) as Record<string, unknown>;
  const name = entry.exportName ?? 'rankMain';
  const fn = mod[name];
  if (typeof fn !== 'function') {
    throw new Error(
      `rank program ${entry.module} does not export a function "${name}"; export one of type RankMain (ctx) => Promise<result>`,
    );
  }
  return fn as RankMain<A, R>;
}
