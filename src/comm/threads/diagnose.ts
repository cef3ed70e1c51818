// The launcher's account of a failed threads run: the root cause first (the first failure heard that is not only
// the echo of another), then the flight-recorder analysis of `inspect` over the dumps the launcher holds — failed
// ranks' own dumps and the live ranks' dumps pulled over the control port when the failure happened — with notes
// on dead ranks taken from what they last wrote into shared memory.

import type { FlightDump } from '../flight-recorder.ts';
import { diagnose } from '../inspect.ts';
import type { RankOutcome } from '../launch.ts';

export interface DiagnosisInput {
  size: number;
  /** Failures in the order the launcher heard of them. */
  failures: readonly { rank: number; what: string }[];
  outcomes: readonly RankOutcome<unknown>[];
  /** Dumps of live ranks pulled over the control port when the first failure happened. */
  snapshot: readonly (FlightDump | null)[];
  /** Dead ranks: what they last did per group, from the arenas. */
  lastCalls: ReadonlyMap<number, string[]>;
}

const firstLine = (s: string) => s.split('\n', 1)[0]!;

/**
 * Failures that only report another rank's failure: a dead peer, a poisoned group, a stop after the failure
 * (threads); a note from the aborting rank, the teardown's signal (mpi).
 */
const DERIVED = [
  /\[peer-dead\]/,
  /is unusable: /,
  /\[aborted\]/,
  /^stopped by the launcher/,
  /^stopped because rank \d+ reported/,
  /received SIG(INT|TERM)/,
];

/** The root cause: the first failure heard that is not a consequence of another one (else the first heard). */
export function rootCause(failures: readonly { rank: number; what: string }[]): { rank: number; what: string } | null {
  return failures.find((f) => !DERIVED.some((re) => re.test(f.what.replace(/^failed: /, '')))) ?? failures[0] ?? null;
}

export function diagnoseThreads(d: DiagnosisInput): string {
  const lines: string[] = [];
  const root = rootCause(d.failures);
  if (root) lines.push(`first failure: rank ${root.rank} ${root.what}`);
  const dumps: FlightDump[] = [];
  const notes = new Map<number, string>();
  for (const o of d.outcomes) {
    const dump = !o.ok && o.dump ? o.dump : d.snapshot[o.rank];
    if (dump) dumps.push(dump);
    if (o.ok) continue;
    const last = d.lastCalls.get(o.rank);
    notes.set(o.rank, `${firstLine(o.error)}${last && last.length ? `; it last ${last.join('; ')}` : ''}`);
  }
  lines.push(diagnose(dumps, { notes, worldSize: d.size }).text);
  const dead = [...notes].filter(([r]) => !dumps.some((x) => x.rank === r));
  for (const [r, note] of dead) lines.push(`rank ${r}: ${note}`);
  return lines.join('\n');
}
