// The launcher's account of a failed threads run: who failed first and how, then where every rank stood in each
// group — from the flight dumps of ranks that could answer, and, for dead ranks, from what they last wrote into
// shared memory. The sentence shapes follow the inproc/inspect reports ("ranks 0,2 are in all_gather #3 on group
// world; missing: rank 1").

import type { FlightDump } from '../flight-recorder.ts';
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

/** Failures that only report another rank's failure (a dead peer, a poisoned group, a stop after the failure). */
const DERIVED = [/\[peer-dead\]/, /is unusable: /, /\[aborted\]/, /^stopped by the launcher/];

/** The root cause: the first failure heard that is not a consequence of another one (else the first heard). */
export function rootCause(failures: readonly { rank: number; what: string }[]): { rank: number; what: string } | null {
  return failures.find((f) => !DERIVED.some((re) => re.test(f.what.replace(/^failed: /, '')))) ?? failures[0] ?? null;
}

export function diagnoseThreads(d: DiagnosisInput): string {
  const lines: string[] = [];
  const root = rootCause(d.failures);
  if (root) lines.push(`first failure: rank ${root.rank} ${root.what}`);
  for (const o of d.outcomes) {
    if (o.ok) continue;
    const last = d.lastCalls.get(o.rank);
    lines.push(`rank ${o.rank}: ${firstLine(o.error)}${last && last.length ? ` (it last ${last.join('; ')})` : ''}`);
  }
  // Per group: the furthest collective any member entered, and the members that never entered it.
  const dumpOf = (r: number): FlightDump | null => {
    const o = d.outcomes.find((x) => x.rank === r);
    if (o && !o.ok && o.dump) return o.dump;
    return d.snapshot[r] ?? null;
  };
  const groups = new Map<string, { ranks: readonly number[]; last: Map<number, number> }>();
  for (let r = 0; r < d.size; r++) {
    const dump = dumpOf(r);
    if (!dump) continue;
    for (const g of dump.groups) {
      const key = `${g.group}[${g.groupRanks.join(',')}]`;
      let e = groups.get(key);
      if (!e) groups.set(key, (e = { ranks: g.groupRanks, last: new Map() }));
      e.last.set(r, g.lastEnqueued);
    }
  }
  for (const [key, g] of groups) {
    const furthest = Math.max(...g.last.values());
    const missing = g.ranks.filter((r) => (g.last.get(r) ?? -1) < furthest);
    if (missing.length === 0) continue;
    const entered = g.ranks.filter((r) => !missing.includes(r));
    const op = entryOp(dumpOf(entered[0]!), key.split('[')[0]!, furthest);
    const why = missing.map((r) => {
      const seen = g.last.get(r);
      if (seen !== undefined) return `rank ${r} (last entered #${seen})`;
      const last = d.lastCalls.get(r);
      return `rank ${r} (${last && last.length ? `no dump; it last ${last.join('; ')}` : 'no dump: dead or unresponsive'})`;
    });
    lines.push(`group ${key}: ${op} #${furthest} entered by ranks ${entered.join(',')}; missing: ${why.join(', ')}`);
  }
  return lines.join('\n');
}

function entryOp(dump: FlightDump | null, group: string, seq: number): string {
  const e = dump?.entries.find((x) => x.group === group && x.seq === seq);
  return e ? e.op : 'collective';
}
