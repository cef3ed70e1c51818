// Which state a row "is in" at each instant. Slices of one row (rank × actor) nest (a step's `forward` contains a
// layer's `attention`) and sometimes overlap without nesting (several FSDP unit machines on the fsdp actor). At
// every instant the row's time belongs to its innermost active slice: the one that started last (on a tie, the
// shorter one). Summing these segments gives self time per state with nothing counted twice.

import type { StateSlice } from './model.ts';

export interface Segment {
  start: number;
  end: number;
  slice: StateSlice;
}

/** Innermost-slice segments of one row's slices (any order in, time order out). */
export function innermostSegments(allRowSlices: readonly StateSlice[]): Segment[] {
  // Zero-length slices own no time (and would confuse the end-before-start tie rule below).
  const rowSlices = allRowSlices.filter((s) => s.end > s.start);
  // Boundaries: ends sort before starts at the same time, so touching slices do not overlap.
  const n = rowSlices.length;
  const ev: { t: number; end: boolean; i: number }[] = new Array(2 * n);
  for (let i = 0; i < n; i++) {
    ev[2 * i] = { t: rowSlices[i]!.start, end: false, i };
    ev[2 * i + 1] = { t: rowSlices[i]!.end, end: true, i };
  }
  ev.sort((a, b) => a.t - b.t || (a.end === b.end ? 0 : a.end ? -1 : 1));
  const active: number[] = [];
  const out: Segment[] = [];
  let prevT = -Infinity;
  const innermost = (): StateSlice | undefined => {
    let best: StateSlice | undefined;
    for (const i of active) {
      const s = rowSlices[i]!;
      if (!best || s.start > best.start || (s.start === best.start && s.end - s.start < best.end - best.start))
        best = s;
    }
    return best;
  };
  for (const e of ev) {
    if (e.t > prevT && active.length > 0) {
      const s = innermost()!;
      const last = out[out.length - 1];
      if (last && last.slice === s && last.end === prevT) last.end = e.t;
      else out.push({ start: prevT, end: e.t, slice: s });
    }
    prevT = e.t;
    if (e.end) {
      const k = active.indexOf(e.i);
      if (k >= 0) active.splice(k, 1);
    } else active.push(e.i);
  }
  return out.filter((s) => s.end > s.start);
}

/**
 * What a whole rank is doing at each instant: among its rows' innermost segments active at that instant, the one
 * whose category ranks first in `priority` (concurrent rows: a layer computing while the next layer's FSDP
 * all_gather is in flight counts as compute). The result partitions the rank's covered time, so per-category sums
 * add up to it.
 */
export function dominantSegments(rows: readonly Segment[][], priority: readonly string[]): Segment[] {
  const rank = new Map(priority.map((c, i) => [c, i]));
  const prio = (s: Segment) => rank.get(s.slice.category) ?? priority.length;
  const ev: { t: number; end: boolean; s: Segment }[] = [];
  for (const row of rows) for (const s of row) ev.push({ t: s.start, end: false, s }, { t: s.end, end: true, s });
  ev.sort((a, b) => a.t - b.t || (a.end === b.end ? 0 : a.end ? -1 : 1));
  const active = new Set<Segment>();
  const out: Segment[] = [];
  let prevT = -Infinity;
  for (const e of ev) {
    if (e.t > prevT && active.size > 0) {
      let best: Segment | undefined;
      for (const s of active) if (!best || prio(s) < prio(best)) best = s;
      const last = out[out.length - 1];
      if (last && last.slice === best!.slice && last.end === prevT) last.end = e.t;
      else out.push({ start: prevT, end: e.t, slice: best!.slice });
    }
    prevT = e.t;
    if (e.end) active.delete(e.s);
    else active.add(e.s);
  }
  return out;
}
