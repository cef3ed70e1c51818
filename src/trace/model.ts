// From a flat event stream to what every view draws: state slices (enter/exit paired), collective spans
// (start/end paired), collectives matched across ranks, counters. Built once per run; the Chrome exporter, the
// HTML timeline and the summaries all read this model, so they cannot disagree about what happened.

import type { CollectiveEvent, CounterEvent, StateCategory, StateEvent, TraceEvent } from '../protocols/events.ts';

export interface StateSlice {
  rank: number;
  actor: string;
  machine: string;
  state: string;
  category: StateCategory;
  step: number;
  layer: number | null;
  microbatch: number | null;
  /** ms on the run's clock. */
  start: number;
  end: number;
  /** No exit was recorded (the rank stopped, hung, or the run was cut): `end` is the run's last time. */
  unfinished: boolean;
}

export interface CollectiveSpan {
  rank: number;
  actor: string;
  op: string;
  group: string;
  groupRanks: readonly number[];
  seq: number;
  start: number;
  end: number;
  dtype: CollectiveEvent['dtype'];
  inNelems: number;
  outNelems: number;
  bytesSent: number;
  bytesReceived: number;
  tag: string | null;
  step: number;
  layer: number | null;
  microbatch: number | null;
  error: string | null;
  unfinished: boolean;
  /** Index into TraceModel.matches. */
  match: number;
}

/** One collective call as seen by all its ranks: (group name + members, seq). */
export interface CollectiveMatch {
  key: string;
  group: string;
  groupRanks: readonly number[];
  seq: number;
  op: string;
  /** Indices into TraceModel.collectives, ordered by start time. */
  spans: number[];
  /** Members with no span for this call: they never issued it (dead, hung elsewhere, or mismatched). */
  missing: number[];
}

export interface TraceModel {
  /** First and last event time (ms, run clock). */
  t0: number;
  t1: number;
  ranks: number[];
  /** Actor rows per rank, in first-seen order with the canonical actors first. */
  actors: Map<number, string[]>;
  slices: StateSlice[];
  collectives: CollectiveSpan[];
  matches: CollectiveMatch[];
  counters: CounterEvent[];
  /** Last event time per rank (a rank whose events stop early is a suspect). */
  lastEventT: Map<number, number>;
  steps: number[];
  layers: number[];
  warnings: string[];
}

const ACTOR_ORDER = ['step', 'router', 'expert', 'fsdp', 'optimizer'];

export const matchKey = (group: string, groupRanks: readonly number[], seq: number) =>
  `${group}[${groupRanks.join(',')}]#${seq}`;

function sliceKey(e: StateEvent): string {
  return `${e.rank}\u0000${e.actor}\u0000${e.machine}\u0000${e.state}\u0000${e.step}\u0000${e.layer}\u0000${e.microbatch}`;
}

/** `events` must be sorted by time (loadRun does this). */
export function buildModel(events: readonly TraceEvent[]): TraceModel {
  const warnings: string[] = [];
  const slices: StateSlice[] = [];
  const collectives: CollectiveSpan[] = [];
  const counters: CounterEvent[] = [];
  const open = new Map<string, StateSlice[]>();
  const openColl = new Map<string, CollectiveSpan>();
  const actorSets = new Map<number, Set<string>>();
  const lastEventT = new Map<number, number>();
  const steps = new Set<number>();
  const layers = new Set<number>();
  let t0 = Infinity;
  let t1 = -Infinity;
  let unmatchedExits = 0;

  const seeActor = (rank: number, actor: string) => {
    let s = actorSets.get(rank);
    if (!s) actorSets.set(rank, (s = new Set()));
    s.add(actor);
  };

  for (const e of events) {
    if (e.t < t0) t0 = e.t;
    if (e.t > t1) t1 = e.t;
    lastEventT.set(e.rank, Math.max(lastEventT.get(e.rank) ?? -Infinity, e.t));
    if (e.kind === 'counter') {
      counters.push(e);
      continue;
    }
    seeActor(e.rank, e.actor);
    steps.add(e.step);
    if (e.layer !== null) layers.add(e.layer);
    if (e.kind === 'state') {
      const k = sliceKey(e);
      if (e.phase === 'enter') {
        const s: StateSlice = {
          rank: e.rank,
          actor: e.actor,
          machine: e.machine,
          state: e.state,
          category: e.category,
          step: e.step,
          layer: e.layer,
          microbatch: e.microbatch,
          start: e.t,
          end: e.t,
          unfinished: true,
        };
        let stack = open.get(k);
        if (!stack) open.set(k, (stack = []));
        stack.push(s);
        slices.push(s);
      } else {
        const s = open.get(k)?.pop();
        if (!s) {
          unmatchedExits++;
          continue;
        }
        s.end = e.t;
        s.unfinished = false;
      }
    } else {
      const k = `${e.rank}\u0000${matchKey(e.group, e.groupRanks, e.seq)}`;
      if (e.phase === 'start') {
        if (openColl.has(k)) warnings.push(`rank ${e.rank}: ${e.op} #${e.seq} on ${e.group} started twice`);
        const c: CollectiveSpan = {
          rank: e.rank,
          actor: e.actor,
          op: e.op,
          group: e.group,
          groupRanks: e.groupRanks,
          seq: e.seq,
          start: e.t,
          end: e.t,
          dtype: e.dtype,
          inNelems: e.inNelems,
          outNelems: e.outNelems,
          bytesSent: e.bytesSent,
          bytesReceived: e.bytesReceived,
          tag: e.tag,
          step: e.step,
          layer: e.layer,
          microbatch: e.microbatch,
          error: null,
          unfinished: true,
          match: -1,
        };
        openColl.set(k, c);
        collectives.push(c);
      } else {
        const c = openColl.get(k);
        if (!c) {
          warnings.push(`rank ${e.rank}: end of ${e.op} #${e.seq} on ${e.group} without a start`);
          continue;
        }
        openColl.delete(k);
        c.end = e.t;
        c.unfinished = false;
        if (e.error) c.error = e.error;
      }
    }
  }
  if (!Number.isFinite(t0)) {
    t0 = 0;
    t1 = 0;
  }
  if (unmatchedExits > 0) warnings.push(`${unmatchedExits} state exits without a matching enter (ignored)`);
  for (const s of slices) if (s.unfinished) s.end = t1;
  for (const c of collectives) if (c.unfinished) c.end = t1;

  const matches = matchCollectives(collectives);
  const ranks = [...actorSets.keys(), ...lastEventT.keys()]
    .filter((r, i, a) => a.indexOf(r) === i)
    .sort((a, b) => a - b);
  const actors = new Map<number, string[]>();
  for (const r of ranks) {
    const seen = [...(actorSets.get(r) ?? [])];
    actors.set(r, [...ACTOR_ORDER.filter((a) => seen.includes(a)), ...seen.filter((a) => !ACTOR_ORDER.includes(a))]);
  }
  return {
    t0,
    t1,
    ranks,
    actors,
    slices,
    collectives,
    matches,
    counters,
    lastEventT,
    steps: [...steps].sort((a, b) => a - b),
    layers: [...layers].sort((a, b) => a - b),
    warnings,
  };
}

function matchCollectives(collectives: CollectiveSpan[]): CollectiveMatch[] {
  const byKey = new Map<string, number>();
  const matches: CollectiveMatch[] = [];
  collectives.forEach((c, i) => {
    const key = matchKey(c.group, c.groupRanks, c.seq);
    let mi = byKey.get(key);
    if (mi === undefined) {
      mi = matches.length;
      byKey.set(key, mi);
      matches.push({ key, group: c.group, groupRanks: c.groupRanks, seq: c.seq, op: c.op, spans: [], missing: [] });
    }
    c.match = mi;
    matches[mi]!.spans.push(i);
  });
  for (const m of matches) {
    m.spans.sort(
      (a, b) => collectives[a]!.start - collectives[b]!.start || collectives[a]!.rank - collectives[b]!.rank,
    );
    const present = new Set(m.spans.map((i) => collectives[i]!.rank));
    m.missing = m.groupRanks.filter((r) => !present.has(r));
  }
  return matches;
}
