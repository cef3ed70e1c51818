// The data the HTML timeline draws, in a compact columnar form (one array per field, strings interned) so that a
// 200k-event run parses quickly in the page and costs few bytes. Slices are pre-sorted by (row, level, start) and
// packed into levels in which they never overlap, so the page can binary-search any time range per level.

import type { StateCategory } from '../protocols/events.ts';
import type { FailedRunView } from './failed-run.ts';
import type { CollectiveSpan, StateSlice, TraceModel } from './model.ts';
import { CATEGORIES, type RunSummary } from './summary.ts';

export interface TimelineRow {
  rank: number;
  actor: string;
  /** Stacked slice levels (nesting depth, plus overlap). */
  levels: number;
  /** Lanes of in-flight collectives drawn under the slices. */
  commLanes: number;
  /** [from, to) into the slice columns, per level. */
  ranges: [number, number][];
  /** [from, to) into the collective columns, per lane. */
  commRanges: [number, number][];
}

export interface TimelineData {
  version: 1;
  run: string;
  /** Absolute time (ms) of t = 0. */
  t0Ms: number;
  durationMs: number;
  strings: string[];
  categories: readonly StateCategory[];
  layers: number[];
  rows: TimelineRow[];
  /** Slices; times in ms from t0. layer/mb -1 = none. flags: 1 = unfinished. */
  s: {
    start: number[];
    dur: number[];
    name: number[];
    machine: number[];
    cat: number[];
    step: number[];
    layer: number[];
    mb: number[];
    flags: number[];
  };
  /**
   * Collectives; flags: 1 = unfinished, 2 = error. waitMs = how long this rank waited for the last arrival;
   * last = rank that arrived last (-1 if alone); err = string index or -1.
   */
  c: {
    start: number[];
    dur: number[];
    op: number[];
    group: number[];
    seq: number[];
    bytesSent: number[];
    bytesReceived: number[];
    inN: number[];
    outN: number[];
    dtype: number[];
    tag: number[];
    err: number[];
    flags: number[];
    waitMs: number[];
    last: number[];
    missing: number[];
    layer: number[];
  };
  summary: RunSummary;
  failed: FailedRunView | null;
}

/** Greedy interval partitioning: each item to the first level whose last end ≤ its start. Order = (start, −end). */
export function packLevels(starts: readonly number[], ends: readonly number[]): { level: number[]; levels: number } {
  const order = starts.map((_, i) => i).sort((a, b) => starts[a]! - starts[b]! || ends[b]! - ends[a]!);
  const lastEnd: number[] = [];
  const level = new Array<number>(starts.length).fill(0);
  for (const i of order) {
    let k = 0;
    while (k < lastEnd.length && lastEnd[k]! > starts[i]!) k++;
    lastEnd[k] = ends[i]!;
    level[i] = k;
  }
  return { level, levels: Math.max(1, lastEnd.length) };
}

const r4 = (v: number) => Math.round(v * 1e4) / 1e4;

export function buildTimelineData(
  model: TraceModel,
  summary: RunSummary,
  failed: FailedRunView | null,
  run: string,
): TimelineData {
  const strings: string[] = [];
  const sid = new Map<string, number>();
  const str = (v: string | null | undefined): number => {
    if (v === null || v === undefined) return -1;
    let i = sid.get(v);
    if (i === undefined) {
      i = strings.length;
      strings.push(v);
      sid.set(v, i);
    }
    return i;
  };
  const catIdx = new Map(CATEGORIES.map((c, i) => [c as string, i]));
  const t0 = model.t0;
  const rows: TimelineRow[] = [];
  const s: TimelineData['s'] = {
    start: [],
    dur: [],
    name: [],
    machine: [],
    cat: [],
    step: [],
    layer: [],
    mb: [],
    flags: [],
  };
  const c: TimelineData['c'] = {
    start: [],
    dur: [],
    op: [],
    group: [],
    seq: [],
    bytesSent: [],
    bytesReceived: [],
    inN: [],
    outN: [],
    dtype: [],
    tag: [],
    err: [],
    flags: [],
    waitMs: [],
    last: [],
    missing: [],
    layer: [],
  };
  const lastArrival = model.matches.map((m) => {
    const spans = m.spans.map((i) => model.collectives[i]!);
    const last = spans[spans.length - 1];
    return { t: last?.start ?? 0, rank: spans.length > 1 ? (last?.rank ?? -1) : -1 };
  });

  const rowKey = (rank: number, actor: string) => `${rank}\u0000${actor}`;
  const slicesOf = new Map<string, StateSlice[]>();
  const collsOf = new Map<string, CollectiveSpan[]>();
  for (const x of model.slices)
    (
      slicesOf.get(rowKey(x.rank, x.actor)) ?? slicesOf.set(rowKey(x.rank, x.actor), []).get(rowKey(x.rank, x.actor))!
    ).push(x);
  for (const x of model.collectives)
    (
      collsOf.get(rowKey(x.rank, x.actor)) ?? collsOf.set(rowKey(x.rank, x.actor), []).get(rowKey(x.rank, x.actor))!
    ).push(x);

  for (const rank of model.ranks) {
    for (const actor of model.actors.get(rank) ?? []) {
      const slices = slicesOf.get(rowKey(rank, actor)) ?? [];
      const packed = packLevels(
        slices.map((x) => x.start),
        slices.map((x) => x.end),
      );
      const order = slices
        .map((_, i) => i)
        .sort((a, b) => packed.level[a]! - packed.level[b]! || slices[a]!.start - slices[b]!.start);
      // Every level holds at least one slice; an empty row still gets one (empty) level.
      const ranges: [number, number][] = Array.from({ length: packed.levels }, () => [s.start.length, s.start.length]);
      for (const i of order) {
        const x = slices[i]!;
        const lvl = packed.level[i]!;
        if (ranges[lvl]![1] === ranges[lvl]![0]) ranges[lvl] = [s.start.length, s.start.length];
        s.start.push(r4(x.start - t0));
        s.dur.push(r4(x.end - x.start));
        s.name.push(str(x.state));
        s.machine.push(str(x.machine));
        s.cat.push(catIdx.get(x.category) ?? CATEGORIES.length - 1);
        s.step.push(x.step);
        s.layer.push(x.layer ?? -1);
        s.mb.push(x.microbatch ?? -1);
        s.flags.push(x.unfinished ? 1 : 0);
        ranges[lvl]![1] = s.start.length;
      }

      const colls = collsOf.get(rowKey(rank, actor)) ?? [];
      const cp = packLevels(
        colls.map((x) => x.start),
        colls.map((x) => x.end),
      );
      const corder = colls
        .map((_, i) => i)
        .sort((a, b) => cp.level[a]! - cp.level[b]! || colls[a]!.start - colls[b]!.start);
      const nLanes = colls.length > 0 ? cp.levels : 0;
      const commRanges: [number, number][] = Array.from({ length: nLanes }, () => [c.start.length, c.start.length]);
      for (const i of corder) {
        const x = colls[i]!;
        const lane = cp.level[i]!;
        if (commRanges[lane]![1] === commRanges[lane]![0]) commRanges[lane] = [c.start.length, c.start.length];
        const la = lastArrival[x.match]!;
        const m = model.matches[x.match]!;
        c.start.push(r4(x.start - t0));
        c.dur.push(r4(x.end - x.start));
        c.op.push(str(x.op));
        c.group.push(str(x.group));
        c.seq.push(x.seq);
        c.bytesSent.push(x.bytesSent);
        c.bytesReceived.push(x.bytesReceived);
        c.inN.push(x.inNelems);
        c.outN.push(x.outNelems);
        c.dtype.push(str(x.dtype));
        c.tag.push(str(x.tag));
        c.err.push(str(x.error));
        c.flags.push((x.unfinished ? 1 : 0) | (x.error ? 2 : 0));
        c.waitMs.push(r4(Math.max(0, la.t - x.start)));
        c.last.push(la.rank === x.rank ? -1 : la.rank);
        c.missing.push(str(m.missing.length > 0 ? m.missing.join(',') : null));
        c.layer.push(x.layer ?? -1);
        commRanges[cp.level[i]!]![1] = c.start.length;
      }
      rows.push({ rank, actor, levels: packed.levels, commLanes: nLanes, ranges, commRanges });
    }
  }
  return {
    version: 1,
    run,
    t0Ms: t0,
    durationMs: model.t1 - model.t0,
    strings,
    categories: CATEGORIES,
    layers: model.layers,
    rows,
    s,
    c,
    summary,
    failed,
  };
}
