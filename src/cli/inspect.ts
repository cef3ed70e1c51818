// `moe-actors inspect <dumps…>`: reads flight-recorder dumps (files, folders of flight-rank-<r>.json, or a run
// folder, whose dumps are in flight/) and prints the cross-rank diagnosis of src/comm/inspect.ts.

import { existsSync, readdirSync, statSync } from 'node:fs';
import { formatInspect, readDumps } from '../comm/inspect.ts';
import { runPaths } from '../trace/run-dir.ts';
import { CliError } from './common.ts';

const DUMP = /^flight-rank-\d+\.json$/;

/** A run folder (outputs/<run>) stands for its flight/ folder, so both spellings a user would try work. */
function dumpSource(p: string): string {
  if (!existsSync(p))
    throw new CliError(
      `${p}: no such file or folder; pass flight-rank-<rank>.json files or the folder holding them (outputs/<run>/flight)`,
    );
  if (!statSync(p).isDirectory()) return p;
  if (readdirSync(p).some((f) => DUMP.test(f))) return p;
  const flight = runPaths(p).flight;
  if (existsSync(flight) && statSync(flight).isDirectory()) return flight;
  throw new CliError(
    `${p}: no flight-rank-<rank>.json files in this folder (nor in ${flight}); ranks write them when a collective fails or times out`,
  );
}

export async function runInspect(paths: readonly string[]): Promise<void> {
  const dumps = readDumps(paths.map(dumpSource));
  console.log(formatInspect(dumps));
}
