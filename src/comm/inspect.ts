// Post-mortem analysis of flight dumps, in the manner of torch's flight-recorder analyzer: per group, the first
// collective that not every member joined ("Not all ranks joining collective #5 … missing ranks: {1}"), calls
// that disagree ("rank 3 called reduce_scatter #12 on group fsdp with 1024 elements, ranks 0,1,2 with 1000"),
// collectives everyone joined that still did not complete; then where every rank is blocked, wait-for cycles
// across groups, and each rank's first error. Works on dumps of any transport (one schema), with ranks missing.

import { describeMismatch } from './collective-match.ts';
import type { FlightDump, FlightEntry } from './flight-recorder.ts';
import { describePositions, place, rankList, type Position } from './report.ts';

export { readDump, readDumps, writeDumpSync, installDumpOnFailure, dumpFileName, parseDump } from './flight-dump-io.ts';

export interface DiagnoseOptions {
  /** What the caller knows about ranks beyond their dumps ("failed: …", "killed by fault injection"). */
  notes?: ReadonlyMap<number, string>;
  /** World size, when no dump says it. */
  worldSize?: number;
}

export type Finding =
  | {
      kind: 'missing';
      group: string;
      groupRanks: readonly number[];
      seq: number;
      op: string;
      joined: number[];
      missing: number[];
      noDump: number[];
      text: string;
    }
  | { kind: 'mismatch'; group: string; groupRanks: readonly number[]; seq: number; text: string }
  | { kind: 'incomplete'; group: string; groupRanks: readonly number[]; seq: number; text: string };

export interface Diagnosis {
  worldSize: number;
  missingDumps: number[];
  findings: Finding[];
  /** Where every rank is (its oldest call that did not complete). */
  positions: Position[];
  /** "rank 2 (all_gather #57 on group ep) waits for rank 3, …" when blocked ranks wait on each other in a ring. */
  cycle: string | null;
  text: string;
}

interface GroupView {
  name: string;
  ranks: readonly number[];
  /** Per world rank with a dump: last enqueued / completed seq on this group (0 if it never called one). */
  status: Map<number, { lastEnqueued: number; lastCompleted: number }>;
  /** Per world rank: its entries on this group by seq. */
  entries: Map<number, Map<number, FlightEntry>>;
}

const groupKey = (name: string, ranks: readonly number[]) => `${name}[${ranks.join(',')}]`;
const set = (xs: readonly number[]) => `{${[...xs].sort((a, b) => a - b).join(',')}}`;

function describeCall(e: FlightEntry): string {
  const parts: string[] = [e.op];
  if (e.reduceOp) parts.push(e.reduceOp);
  parts.push(e.dtype);
  if (e.op === 'all_gather_v' || e.op === 'all_to_all_v')
    parts.push(`splits in [${(e.inSplits ?? []).join(',')}] out [${(e.outSplits ?? []).join(',')}]`);
  else if (e.op !== 'barrier')
    parts.push(
      e.inNelems === e.outNelems
        ? `${e.inNelems} element${e.inNelems === 1 ? '' : 's'}`
        : `${e.inNelems} → ${e.outNelems} elements`,
    );
  if (e.tag) parts.push(`tag "${e.tag}"`);
  return parts.join(', ');
}

function oldestUnfinished(entries: readonly FlightEntry[]): FlightEntry | undefined {
  let best: FlightEntry | undefined;
  for (const e of entries) if (e.state !== 'completed' && (!best || e.id < best.id)) best = e;
  return best;
}

function buildGroups(dumps: ReadonlyMap<number, FlightDump>): GroupView[] {
  const groups = new Map<string, GroupView>();
  const view = (name: string, ranks: readonly number[]) => {
    const k = groupKey(name, ranks);
    let g = groups.get(k);
    if (!g) {
      g = { name, ranks: [...ranks], status: new Map(), entries: new Map() };
      groups.set(k, g);
    }
    return g;
  };
  for (const d of dumps.values()) {
    for (const s of d.groups)
      view(s.group, s.groupRanks).status.set(d.rank, { lastEnqueued: s.lastEnqueued, lastCompleted: s.lastCompleted });
    for (const e of d.entries) {
      const g = view(e.group, e.groupRanks);
      let m = g.entries.get(d.rank);
      if (!m) g.entries.set(d.rank, (m = new Map()));
      m.set(e.seq, e);
    }
  }
  // Members with a dump that never called anything on the group are at seq 0 there.
  for (const g of groups.values())
    for (const r of g.ranks)
      if (dumps.has(r) && !g.status.has(r)) g.status.set(r, { lastEnqueued: 0, lastCompleted: 0 });
  return [...groups.values()].sort((a, b) => a.name.localeCompare(b.name) || a.ranks[0]! - b.ranks[0]!);
}

/** The first problem of one group, if any. */
function analyzeGroup(g: GroupView, dumps: ReadonlyMap<number, FlightDump>): Finding | null {
  const known = g.ranks.filter((r) => dumps.has(r));
  const noDump = g.ranks.filter((r) => !dumps.has(r));
  if (known.length === 0) return null;
  const st = (r: number) => g.status.get(r)!;
  const maxEnq = Math.max(...known.map((r) => st(r).lastEnqueued));
  const from = Math.min(...known.map((r) => st(r).lastCompleted)) + 1;
  const header = `group ${g.name} (${rankList(g.ranks)})`;
  for (let seq = from; seq <= maxEnq; seq++) {
    const joined = known.filter((r) => st(r).lastEnqueued >= seq);
    const notJoined = known.filter((r) => st(r).lastEnqueued < seq);
    const calls = joined
      .map((r) => ({ rank: r, entry: g.entries.get(r)?.get(seq) }))
      .filter((c): c is { rank: number; entry: FlightEntry } => !!c.entry);
    const mismatch = calls.length >= 2 ? describeMismatch(calls) : null;
    const sample = calls[0]?.entry;
    const what = sample ? `(${describeCall(sample)})` : '(entry no longer in the ring buffer)';
    if (notJoined.length > 0 || noDump.length > 0) {
      const missing = [...notJoined, ...noDump];
      const where = notJoined.map((r) => `rank ${r} last enqueued #${st(r).lastEnqueued} here`).join(', ');
      const states = [...new Set(calls.map((c) => c.entry.state))].join('/');
      const text =
        `${header}: Not all ranks joining collective #${seq} ${what}: missing ranks: ${set(missing)}` +
        `${noDump.length ? ` (no dump from ${rankList(noDump)})` : ''}; joined: ${set(joined)}${states ? ` (state: ${states})` : ''}` +
        `${where ? `; ${where}` : ''}${mismatch ? `; also mismatch: ${mismatch}` : ''}` +
        `${maxEnq > seq ? `; ${maxEnq - seq} later collective(s) on this group are pending too` : ''}`;
      return {
        kind: 'missing',
        group: g.name,
        groupRanks: g.ranks,
        seq,
        op: sample?.op ?? '?',
        joined,
        missing,
        noDump,
        text,
      };
    }
    if (mismatch)
      return {
        kind: 'mismatch',
        group: g.name,
        groupRanks: g.ranks,
        seq,
        text: `${header}: mismatch at collective #${seq}: ${mismatch}`,
      };
    const unfinished = known.filter((r) => st(r).lastCompleted < seq);
    if (unfinished.length > 0) {
      const byState = new Map<string, number[]>();
      for (const c of calls) {
        if (c.entry.state === 'completed') continue;
        const k =
          c.entry.state === 'failed'
            ? `failed (${normalize(firstLine(c.entry.error ?? 'no error text'))})`
            : c.entry.state;
        byState.set(k, [...(byState.get(k) ?? []), c.rank]);
      }
      const states = [...byState.entries()].map(([k, rs]) => `${rankList(rs)} ${k}`).join('; ');
      return {
        kind: 'incomplete',
        group: g.name,
        groupRanks: g.ranks,
        seq,
        text: `${header}: every rank joined collective #${seq} ${what} but it did not complete: ${states || `${rankList(unfinished)} did not complete it`}`,
      };
    }
  }
  return null;
}

/** Error texts differ between ranks only by "(rank N)"; without it identical reports group together. */
const normalize = (s: string) => s.replace(/ \(rank \d+\) failed: /, ' failed: ');

const firstLine = (s: string) => {
  const l = s.split('\n', 1)[0]!;
  return l.length > 300 ? `${l.slice(0, 300)}…` : l;
};

/** A ring of blocked ranks each waiting for the next, from the 'missing' findings. */
function findCycle(findings: readonly Finding[], blockedAt: ReadonlyMap<number, FlightEntry>): string | null {
  const waitsFor = new Map<number, { on: number[]; at: FlightEntry }>();
  for (const f of findings) {
    if (f.kind !== 'missing') continue;
    for (const r of f.joined) {
      const at = blockedAt.get(r);
      if (at && at.group === f.group && at.seq === f.seq && at.groupRanks.join(',') === f.groupRanks.join(','))
        waitsFor.set(r, { on: f.missing, at });
    }
  }
  const visit = (start: number): number[] | null => {
    const path: number[] = [];
    const seen = new Set<number>();
    const dfs = (r: number): number[] | null => {
      if (seen.has(r)) return path.includes(r) ? path.slice(path.indexOf(r)) : null;
      seen.add(r);
      path.push(r);
      for (const n of waitsFor.get(r)?.on ?? []) {
        const c = dfs(n);
        if (c) return c;
      }
      path.pop();
      return null;
    };
    return dfs(start);
  };
  for (const r of [...waitsFor.keys()].sort((a, b) => a - b)) {
    const cyc = visit(r);
    if (cyc && cyc.length > 1) {
      return cyc
        .map((x, i) => `rank ${x} (${place(waitsFor.get(x)!.at)}) waits for rank ${cyc[(i + 1) % cyc.length]}`)
        .join(', ');
    }
  }
  return null;
}

export function diagnose(dumpList: readonly FlightDump[], opts: DiagnoseOptions = {}): Diagnosis {
  const dumps = new Map<number, FlightDump>();
  for (const d of dumpList) {
    const prev = dumps.get(d.rank);
    if (!prev || d.tDump > prev.tDump) dumps.set(d.rank, d);
  }
  const worldSize = Math.max(
    opts.worldSize ?? 0,
    ...dumpList.map((d) => d.worldSize),
    ...dumpList.map((d) => d.rank + 1),
    0,
  );
  const missingDumps = Array.from({ length: worldSize }, (_, r) => r).filter((r) => !dumps.has(r));
  const findings = buildGroups(dumps)
    .map((g) => analyzeGroup(g, dumps))
    .filter((f): f is Finding => f !== null);

  const blockedAt = new Map<number, FlightEntry>();
  const positions: Position[] = [];
  for (let r = 0; r < worldSize; r++) {
    const d = dumps.get(r);
    const note = opts.notes?.get(r);
    if (!d) {
      positions.push({
        rank: r,
        where: note ? `without a dump (${note})` : 'without a dump (dead, or it never dumped)',
      });
      continue;
    }
    const e = oldestUnfinished(d.entries);
    if (e) {
      blockedAt.set(r, e);
      positions.push({ rank: r, where: `in ${place(e)}` });
    } else positions.push({ rank: r, where: note ? `not in a collective (${note})` : 'not in a collective' });
  }
  const cycle = findCycle(findings, blockedAt);

  const lines: string[] = [];
  const backends = [...new Set(dumpList.map((d) => d.backend))].join(', ') || 'unknown';
  lines.push(
    `flight recorder analysis: ${dumps.size} dump(s), world size ${worldSize}, backend ${backends}` +
      (missingDumps.length ? `; no dump from ${rankList(missingDumps)}` : ''),
  );
  if (worldSize > 0) lines.push(`where the ranks are: ${describePositions(positions)}`);
  if (findings.length === 0) lines.push('every group: all members joined and completed every recorded collective');
  for (const f of findings) lines.push(f.text);
  if (cycle) lines.push(`wait cycle: ${cycle}`);
  // Ranks whose first errors read the same are listed together.
  const errors = new Map<string, number[]>();
  for (let r = 0; r < worldSize; r++) {
    const d = dumps.get(r);
    const failed = d?.entries.filter((e) => e.state === 'failed').sort((a, b) => a.id - b.id)[0];
    if (!failed) continue;
    const text = normalize(firstLine(failed.error ?? `${place(failed)} failed`));
    errors.set(text, [...(errors.get(text) ?? []), r]);
  }
  if (errors.size)
    lines.push('first error per rank:', ...[...errors.entries()].map(([text, rs]) => `  ${rankList(rs)}: ${text}`));
  return { worldSize, missingDumps, findings, positions, cycle, text: lines.join('\n') };
}

/** The text `moe-actors inspect <dumps…>` prints. */
export function formatInspect(dumps: readonly FlightDump[]): string {
  if (dumps.length === 0)
    return 'no flight dumps given; pass dump files or a directory of flight-rank-<rank>.json files';
  return diagnose(dumps).text;
}
