// Flight dumps on disk: one JSON file per rank, written atomically (temporary name, then rename) so that a reader
// — `moe-actors inspect`, or a launcher collecting dumps of a dying job — never sees half a file. The schema is
// FlightDump (flight-recorder.ts) for every transport.

import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FlightDump, FlightRecorder } from './flight-recorder.ts';
import { place } from './report.ts';

export function dumpFileName(rank: number): string {
  return `flight-rank-${rank}.json`;
}

/**
 * Writes `dump` to `<dir>/flight-rank-<rank>.json` atomically and returns the path. Synchronous on purpose: it is
 * called on failure paths, where the process (an MPI rank about to abort) may not live to finish an async write.
 */
export function writeDumpSync(dir: string, dump: FlightDump): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, dumpFileName(dump.rank));
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  writeFileSync(tmp, JSON.stringify(dump, null, 1));
  renameSync(tmp, path);
  return path;
}

/** Parses and checks one dump; errors name the file and the field. */
export function parseDump(text: string, source: string): FlightDump {
  let d: unknown;
  try {
    d = JSON.parse(text);
  } catch (err) {
    throw new Error(`${source}: not a flight dump (invalid JSON: ${(err as Error).message})`);
  }
  const o = d as Record<string, unknown>;
  const need = (cond: boolean, field: string, what: string) => {
    if (!cond) throw new Error(`${source}: not a flight dump of schema version 1: field "${field}" ${what}`);
  };
  need(typeof d === 'object' && d !== null, '(root)', 'must be an object');
  need(o.version === 1, 'version', `must be 1, got ${JSON.stringify(o.version)}`);
  need(Number.isInteger(o.rank) && (o.rank as number) >= 0, 'rank', 'must be an integer ≥ 0');
  need(Number.isInteger(o.worldSize) && (o.worldSize as number) >= 1, 'worldSize', 'must be an integer ≥ 1');
  need(Array.isArray(o.groups), 'groups', 'must be an array');
  need(Array.isArray(o.entries), 'entries', 'must be an array');
  for (const [i, e] of (o.entries as Record<string, unknown>[]).entries()) {
    need(
      typeof e.group === 'string' && Array.isArray(e.groupRanks),
      `entries[${i}].group/groupRanks`,
      'must be a string and an array',
    );
    need(
      Number.isInteger(e.seq) && typeof e.op === 'string' && typeof e.state === 'string',
      `entries[${i}].seq/op/state`,
      'are missing',
    );
  }
  for (const [i, g] of (o.groups as Record<string, unknown>[]).entries()) {
    need(
      typeof g.group === 'string' && Array.isArray(g.groupRanks) && Number.isInteger(g.lastEnqueued),
      `groups[${i}]`,
      'needs group, groupRanks, lastEnqueued',
    );
  }
  return d as FlightDump;
}

export function readDump(path: string): FlightDump {
  return parseDump(readFileSync(path, 'utf8'), path);
}

/** Reads dumps from files and directories (every flight-rank-*.json in a directory). */
export function readDumps(paths: readonly string[]): FlightDump[] {
  const files: string[] = [];
  for (const p of paths) {
    if (statSync(p).isDirectory()) {
      const found = readdirSync(p)
        .filter((f) => /^flight-rank-\d+\.json$/.test(f))
        .map((f) => join(p, f));
      if (found.length === 0) throw new Error(`${p}: no flight-rank-<rank>.json files in this directory`);
      files.push(...found);
    } else files.push(p);
  }
  return files.map(readDump);
}

/**
 * Writes the recorder's dump to `dir` every time one of its collectives fails (torch's dump-on-timeout, for every
 * kind of failure); the latest dump replaces the previous one. Returns an uninstall function.
 */
export function installDumpOnFailure(recorder: FlightRecorder, dir: string): () => void {
  return recorder.onFail((entry) => {
    writeDumpSync(dir, recorder.dump(`${place(entry)} failed: ${entry.error ?? 'unknown error'}`));
  });
}
