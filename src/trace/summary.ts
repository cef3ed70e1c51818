// Per-layer, per-rank accounting of where time went, in the terms of HTA (Holistic Trace Analysis) translated
// to ranks that are CPU threads rather than GPUs:
//   - time per state category: the rank's time partitioned by what it is doing (self-time.ts: each row's
//     innermost state, and across rows the one of highest CATEGORY_PRIORITY), so categories add up to the time
//     the rank is inside any state; per-state self time (`states`) is kept per row;
//   - compute: instants where some row's innermost state is `compute` or `optimizer`, or where every active
//     row is only inside a step phase (`forward`/`recompute`/`backward`) with nothing more specific going on;
//   - comm: instants where a collective of the rank is in flight (waiting for peers included, as HTA counts
//     time inside NCCL kernels as communication);
//   - overlap % = |comm ∩ compute| / |comm|  (HTA's "communication computation overlap");
//   - idle = window − (compute ∪ comm), the window being the rank's first to last event (HTA's idle time).
// Per layer L: categories and comm count only layer-L states/collectives; overlap is the share of L's
// communication hidden behind any compute; the window is the union of L's spans on the rank, so idle is the
// time the rank was inside layer L doing neither.

import pc from 'picocolors';
import type { StateCategory } from '../protocols/events.ts';
import { intersect, length, subtract, union, unionOf, type IntervalSet } from './intervals.ts';
import type { CollectiveSpan, StateSlice, TraceModel } from './model.ts';
import { dominantSegments, innermostSegments, type Segment } from './self-time.ts';

export const CATEGORIES: readonly StateCategory[] = [
  'dispatch',
  'compute',
  'combine',
  'forward',
  'recompute',
  'backward',
  'reduce',
  'optimizer',
  'waiting',
  'other',
];
/** Which category a rank's instant counts as when several rows are active (see dominantSegments). */
export const CATEGORY_PRIORITY: readonly StateCategory[] = [
  'compute',
  'optimizer',
  'dispatch',
  'combine',
  'reduce',
  'waiting',
  'recompute',
  'backward',
  'forward',
  'other',
];
const COMPUTE_CATS = new Set<StateCategory>(['compute', 'optimizer']);
const PHASE_CATS = new Set<StateCategory>(['forward', 'recompute', 'backward']);

export type LayerKey = number | 'all';

export interface RankLayerSummary {
  layer: LayerKey;
  rank: number;
  windowMs: number;
  /** Time per category, ms: the rank's time partitioned by its dominant state (sums to the time in any state). */
  byCategory: Record<StateCategory, number>;
  computeMs: number;
  commMs: number;
  overlapMs: number;
  /** null when there was no communication. */
  overlapPct: number | null;
  idleMs: number;
  idlePct: number | null;
  collectives: number;
  bytesSent: number;
}

export interface StateTime {
  layer: LayerKey;
  rank: number;
  actor: string;
  machine: string;
  state: string;
  category: StateCategory;
  /** Self time, ms. */
  ms: number;
  /** Number of visits. */
  count: number;
}

export interface RunSummary {
  ranks: number[];
  layers: LayerKey[];
  rows: RankLayerSummary[];
  states: StateTime[];
  /** Run window, ms. */
  durationMs: number;
  steps: number;
}

const zeroCats = (): Record<StateCategory, number> =>
  Object.fromEntries(CATEGORIES.map((c) => [c, 0])) as Record<StateCategory, number>;

const pct = (num: number, den: number) => (den > 0 ? (100 * num) / den : null);

/** Items grouped by layer key, with every item also under 'all' (one pass instead of a filter per layer). */
function byLayer<T>(items: readonly T[], layerOf: (x: T) => number | null): Map<LayerKey, T[]> {
  const m = new Map<LayerKey, T[]>([['all', items as T[]]]);
  for (const x of items) {
    const l = layerOf(x);
    if (l === null) continue;
    let a = m.get(l);
    if (!a) m.set(l, (a = []));
    a.push(x);
  }
  return m;
}

const pairs = <T extends { start: number; end: number }>(xs: readonly T[]) =>
  xs.map((x) => [x.start, x.end] as [number, number]);

export function summarize(model: TraceModel): RunSummary {
  const rows: RankLayerSummary[] = [];
  const states: StateTime[] = [];
  const layers: LayerKey[] = ['all', ...model.layers];
  const slicesOf = new Map<number, StateSlice[]>();
  const collsOf = new Map<number, CollectiveSpan[]>();
  for (const s of model.slices) (slicesOf.get(s.rank) ?? slicesOf.set(s.rank, []).get(s.rank)!).push(s);
  for (const c of model.collectives) (collsOf.get(c.rank) ?? collsOf.set(c.rank, []).get(c.rank)!).push(c);
  for (const rank of model.ranks) {
    const rankSlices = slicesOf.get(rank) ?? [];
    const rankColls = collsOf.get(rank) ?? [];
    const rowSegs = (model.actors.get(rank) ?? []).map((actor) =>
      innermostSegments(rankSlices.filter((s) => s.actor === actor)),
    );
    const segs: Segment[] = rowSegs.flat();
    const dominant = dominantSegments(rowSegs, CATEGORY_PRIORITY);

    const setOf = (pred: (s: Segment) => boolean): IntervalSet => unionOf(pairs(segs.filter(pred)));
    const specific = setOf((s) => !PHASE_CATS.has(s.slice.category));
    const phaseOnly = subtract(
      setOf((s) => PHASE_CATS.has(s.slice.category)),
      specific,
    );
    const compute = union(
      setOf((s) => COMPUTE_CATS.has(s.slice.category)),
      phaseOnly,
    );
    const commAll = unionOf(pairs(rankColls));
    const busy = union(compute, commAll);
    let first = Infinity;
    for (const s of rankSlices) first = Math.min(first, s.start);
    for (const c of rankColls) first = Math.min(first, c.start);
    const last = model.lastEventT.get(rank) ?? first;

    const segsBy = byLayer(segs, (s) => s.slice.layer);
    const domBy = byLayer(dominant, (s) => s.slice.layer);
    const collsBy = byLayer(rankColls, (c) => c.layer);
    const slicesBy = byLayer(rankSlices, (s) => s.layer);

    for (const layer of layers) {
      const lsegs = segsBy.get(layer) ?? [];
      const colls = collsBy.get(layer) ?? [];
      if (layer !== 'all' && lsegs.length === 0 && colls.length === 0) continue;
      const byCategory = zeroCats();
      for (const s of domBy.get(layer) ?? []) byCategory[s.slice.category] += s.end - s.start;
      const perState = new Map<string, StateTime>();
      for (const s of lsegs) {
        const k = `${s.slice.actor}\u0000${s.slice.machine}\u0000${s.slice.state}`;
        let st = perState.get(k);
        if (!st) {
          st = {
            layer,
            rank,
            actor: s.slice.actor,
            machine: s.slice.machine,
            state: s.slice.state,
            category: s.slice.category,
            ms: 0,
            count: 0,
          };
          perState.set(k, st);
        }
        st.ms += s.end - s.start;
      }
      const lslices = slicesBy.get(layer) ?? [];
      for (const s of lslices) {
        const st = perState.get(`${s.actor}\u0000${s.machine}\u0000${s.state}`);
        if (st) st.count++;
      }
      for (const st of perState.values()) states.push(st);

      const comm = layer === 'all' ? commAll : unionOf(pairs(colls));
      const window: IntervalSet =
        layer === 'all' ? (last > first ? [first, last] : []) : unionOf([...pairs(lslices), ...pairs(colls)]);
      const windowMs = length(window);
      const computeMs = length(layer === 'all' ? compute : intersect(compute, window));
      const commMs = length(comm);
      const overlapMs = length(intersect(comm, compute));
      const idleMs = length(subtract(window, busy));
      rows.push({
        layer,
        rank,
        windowMs,
        byCategory,
        computeMs,
        commMs,
        overlapMs,
        overlapPct: pct(overlapMs, commMs),
        idleMs,
        idlePct: pct(idleMs, windowMs),
        collectives: colls.length,
        bytesSent: colls.reduce((a, c) => a + c.bytesSent, 0),
      });
    }
  }
  return {
    ranks: model.ranks,
    layers: layers.filter((l) => rows.some((r) => r.layer === l)),
    rows,
    states,
    durationMs: model.t1 - model.t0,
    steps: model.steps.length,
  };
}

// ---- terminal rendering ----------------------------------------------------------------------------------

const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const pctS = (v: number | null) => (v === null ? '–' : `${v.toFixed(0)}%`);

function table(head: string[], rows: string[][], color: boolean): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  const h = line(head);
  return [color ? pc.bold(h) : h, w.map((n) => '─'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

export interface RenderOptions {
  /** Only these layers ('all' is the whole run). Default: 'all' and every layer. */
  layers?: LayerKey[];
  /** Also a per-state table (self time per actor:state, a column per rank) under each layer. Default true. */
  states?: boolean;
  color?: boolean;
}

/** Self time per actor:state (rows, busiest first) and rank (columns) for one layer. */
export function renderStateTable(sum: RunSummary, layer: LayerKey, color = false): string {
  const rows = sum.states.filter((s) => s.layer === layer);
  const keys = [...new Set(rows.map((s) => `${s.actor}:${s.state}`))];
  const cell = new Map(rows.map((s) => [`${s.actor}:${s.state}\u0000${s.rank}`, s]));
  const total = (k: string) => sum.ranks.reduce((a, r) => a + (cell.get(`${k}\u0000${r}`)?.ms ?? 0), 0);
  keys.sort((a, b) => total(b) - total(a) || a.localeCompare(b));
  return table(
    ['state (self ms)', ...sum.ranks.map((r) => `rank ${r}`), 'visits'],
    keys.map((k) => [
      k,
      ...sum.ranks.map((r) => {
        const c = cell.get(`${k}\u0000${r}`);
        return c ? ms(c.ms) : '–';
      }),
      String(cell.get(`${k}\u0000${sum.ranks[0]}`)?.count ?? '–'),
    ]),
    color,
  );
}

/** The summary as terminal tables: one per layer, a row per rank, a column per category that occurred. */
export function renderSummary(sum: RunSummary, opts: RenderOptions = {}): string {
  const color = opts.color ?? false;
  const out: string[] = [];
  const used = CATEGORIES.filter((c) => sum.rows.some((r) => r.byCategory[c] > 0));
  out.push(
    `run: ${sum.ranks.length} ranks, ${sum.steps} steps, ${ms(sum.durationMs)} ms. Times in ms; category columns partition each rank's time by its dominant state.`,
  );
  out.push(
    '* HTA terms: compute = compute/optimizer states (or a bare step phase); comm = collectives in flight; overlap = comm hidden behind compute; idle = neither.',
  );
  for (const layer of opts.layers ?? sum.layers) {
    const rows = sum.rows.filter((r) => r.layer === layer);
    if (rows.length === 0) continue;
    const title = layer === 'all' ? 'all layers' : `layer ${layer}`;
    out.push('', color ? pc.cyan(title) : title);
    const head = ['rank', ...used, 'compute*', 'comm*', 'overlap*', 'idle*', 'idle%'];
    out.push(
      table(
        head,
        rows.map((r) => [
          String(r.rank),
          ...used.map((c) => ms(r.byCategory[c])),
          ms(r.computeMs),
          ms(r.commMs),
          pctS(r.overlapPct),
          ms(r.idleMs),
          pctS(r.idlePct),
        ]),
        color,
      ),
    );
    if (opts.states ?? true) out.push('', renderStateTable(sum, layer, color));
  }
  return out.join('\n');
}
