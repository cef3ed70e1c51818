// The on-disk layout of one run and how its per-rank files become one event list.
//
//   outputs/<run>/events/*.jsonl   per-rank event streams (TraceRecorder; one file per rank, or one file for
//                                   several ranks on a single clock, e.g. inproc)
//   outputs/<run>/flight/          flight-recorder dumps flight-rank-<r>.json (WorldOptions.dumpDir = <run>/flight)
//   outputs/<run>/trace.json       Chrome Trace Event JSON (writeChromeTrace)
//   outputs/<run>/timeline.html    self-contained timeline (writeTimeline)
//
// Merging applies each file's clock offset (its last meta line) and sorts by time, so events of ranks on different
// hosts land on rank 0's clock.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readDump } from '../comm/flight-dump-io.ts';
import type { FlightDump } from '../comm/flight-recorder.ts';
import type { TraceEvent } from '../protocols/events.ts';
import type { RecorderMeta } from './recorder.ts';

export const runPaths = (dir: string) => ({
  events: join(dir, 'events'),
  flight: join(dir, 'flight'),
  trace: join(dir, 'trace.json'),
  timeline: join(dir, 'timeline.html'),
  rankEvents: (rank: number) => join(dir, 'events', `rank-${rank}.jsonl`),
});

export interface EventFile {
  file: string;
  meta: RecorderMeta | null;
  events: TraceEvent[];
  /** Lines that were not JSON (a torn last line of a killed rank is expected; more is a problem). */
  badLines: number;
  /** The file ends inside a line: its writer was killed mid-write, or the file was cut short afterwards. */
  tornEnd: boolean;
}

/** Parses one JSON Lines event file. A partial last line (process killed mid-write) is counted, not fatal. */
export function readEventFile(file: string): EventFile {
  const text = readFileSync(file, 'utf8');
  const events: TraceEvent[] = [];
  let meta: RecorderMeta | null = null;
  let badLines = 0;
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    if (end > start) {
      let v: unknown;
      try {
        v = JSON.parse(text.slice(start, end));
      } catch {
        badLines++;
        v = undefined;
      }
      const kind = (v as { kind?: unknown } | undefined)?.kind;
      if (kind === 'meta') meta = v as RecorderMeta;
      else if (kind === 'state' || kind === 'collective' || kind === 'counter') events.push(v as TraceEvent);
      else if (v !== undefined) badLines++;
    }
    start = end + 1;
  }
  const tornEnd = text.length > 0 && !text.endsWith('\n');
  return { file, meta, events, badLines, tornEnd };
}

/** Shifts every time of `events` (in place) from the rank's clock onto the reference clock. */
export function applyClockOffset(events: TraceEvent[], offsetMs: number): void {
  if (offsetMs === 0) return;
  for (const e of events) e.t -= offsetMs;
}

export interface LoadedRun {
  dir: string;
  /** All ranks' events on the reference clock, sorted by time (stable: per-file order kept on ties). */
  events: TraceEvent[];
  files: EventFile[];
  dumps: FlightDump[];
  warnings: string[];
}

/** Reads and merges every event file (and flight dump) of a run directory. */
export function loadRun(dir: string): LoadedRun {
  const p = runPaths(dir);
  if (!existsSync(p.events))
    throw new Error(`${dir}: no events/ directory (expected per-rank *.jsonl written by TraceRecorder)`);
  const names = readdirSync(p.events)
    .filter((n) => n.endsWith('.jsonl'))
    .sort();
  if (names.length === 0) throw new Error(`${p.events}: no *.jsonl event files`);
  const warnings: string[] = [];
  const files = names.map((n) => readEventFile(join(p.events, n)));
  const events: TraceEvent[] = [];
  for (const f of files) {
    if (f.badLines > 1) warnings.push(`${f.file}: ${f.badLines} unreadable lines`);
    // A torn end is what a killed rank leaves, but it is also what a truncated copy looks like: either way the
    // timeline of this rank stops early, and the user must not read the gap as idle time.
    if (f.tornEnd) {
      const last = f.events.length > 0 ? f.events[f.events.length - 1]!.t : undefined;
      warnings.push(
        `${f.file}: ends inside a line (the rank was killed while writing, or the file was cut short), so this rank's timeline stops early${last === undefined ? '' : ` at t = ${last.toFixed(3)} ms`}; a copied run folder may be incomplete — copy it again`,
      );
    }
    if (f.meta?.truncatedAfter !== undefined) {
      warnings.push(
        `${f.file}: rank ${f.meta.rank} recorded more events than [trace] max_events = ${f.meta.truncatedAfter}; the file holds the first ${f.meta.truncatedAfter}, so the timeline ends early for this rank (raise max_events, or trace fewer steps)`,
      );
    }
    applyClockOffset(f.events, f.meta?.clockOffsetMs ?? 0);
    for (const e of f.events) events.push(e);
  }
  return { dir, events: sortByTime(events), files, dumps: loadFlightDumps(dir, warnings), warnings };
}

/** Stable sort by `t` (Array.prototype.sort is stable since ES2019). */
export function sortByTime(events: TraceEvent[]): TraceEvent[] {
  return events.sort((a, b) => a.t - b.t);
}

/**
 * Every flight dump under <run>/flight/ (flight-rank-<rank>.json, as comm/flight-dump-io writes them), ordered by
 * rank; an unreadable dump becomes a warning, so a damaged file does not hide the rest of a failed run.
 */
export function loadFlightDumps(dir: string, warnings: string[] = []): FlightDump[] {
  const fdir = runPaths(dir).flight;
  if (!existsSync(fdir)) return [];
  const dumps: FlightDump[] = [];
  for (const n of readdirSync(fdir).filter((n) => /^flight-rank-\d+\.json$/.test(n))) {
    try {
      dumps.push(readDump(join(fdir, n)));
    } catch (err) {
      warnings.push((err as Error).message);
    }
  }
  return dumps.sort((a, b) => a.rank - b.rank);
}
