import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { CollectiveEvent, StateCategory, TraceEvent } from '../../src/protocols/events.ts';
import { intersect, length, subtract, union, unionOf } from '../../src/trace/intervals.ts';
import { buildModel, type StateSlice } from '../../src/trace/model.ts';
import { dominantSegments, innermostSegments } from '../../src/trace/self-time.ts';
import { CATEGORY_PRIORITY, renderSummary, summarize } from '../../src/trace/summary.ts';

const st = (
  rank: number,
  actor: string,
  state: string,
  category: StateCategory,
  phase: 'enter' | 'exit',
  t: number,
  layer: number | null = 0,
): TraceEvent => ({
  kind: 'state',
  rank,
  actor,
  machine: 'm',
  state,
  category,
  phase,
  t,
  step: 0,
  layer,
  microbatch: 0,
});
const co = (
  rank: number,
  seq: number,
  phase: 'start' | 'end',
  t: number,
  extra: Partial<CollectiveEvent> = {},
): TraceEvent => ({
  kind: 'collective',
  rank,
  actor: 'expert',
  op: 'all_to_all_v',
  group: 'ep',
  groupRanks: [0, 1],
  seq,
  phase,
  t,
  dtype: 'float32',
  inNelems: 4,
  outNelems: 4,
  bytesSent: 16,
  bytesReceived: 16,
  tag: null,
  step: 0,
  layer: 0,
  microbatch: 0,
  ...extra,
});
const sorted = (es: TraceEvent[]) => es.sort((a, b) => a.t - b.t);

describe('intervals', () => {
  // Reference: sets of integer points in [0, 64).
  const pts = (pairs: [number, number][]) => {
    const s = new Set<number>();
    for (const [a, b] of pairs) for (let x = a; x < b; x++) s.add(x);
    return s;
  };
  const toPts = (set: number[]) => {
    const pairs: [number, number][] = [];
    for (let i = 0; i < set.length; i += 2) pairs.push([set[i]!, set[i + 1]!]);
    return pts(pairs);
  };
  const arb = fc.array(
    fc
      .tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 0, max: 63 }))
      .map(([a, b]) => [Math.min(a, b), Math.max(a, b)] as [number, number]),
    { maxLength: 8 },
  );
  it('union, intersect, subtract and length agree with point sets', () => {
    fc.assert(
      fc.property(arb, arb, (pa, pb) => {
        const A = unionOf(pa);
        const B = unionOf(pb);
        const a = pts(pa);
        const b = pts(pb);
        expect(toPts(union(A, B))).toEqual(new Set([...a, ...b]));
        expect(toPts(intersect(A, B))).toEqual(new Set([...a].filter((x) => b.has(x))));
        expect(toPts(subtract(A, B))).toEqual(new Set([...a].filter((x) => !b.has(x))));
        expect(length(A)).toBe(a.size);
      }),
      { numRuns: 300 },
    );
  });
});

describe('model', () => {
  it('pairs enter/exit (nested and repeated), flags unfinished slices and orphan exits', () => {
    const m = buildModel(
      sorted([
        st(0, 'step', 'forward', 'forward', 'enter', 0, null),
        st(0, 'step', 'attention', 'compute', 'enter', 1),
        st(0, 'step', 'attention', 'compute', 'exit', 3),
        st(0, 'step', 'forward', 'forward', 'exit', 4, null),
        st(0, 'step', 'forward', 'forward', 'enter', 5, null),
        st(0, 'router', 'route', 'compute', 'exit', 6),
        st(0, 'step', 'attention', 'compute', 'enter', 7),
      ]),
    );
    const s = m.slices.map((x) => [x.state, x.start, x.end, x.unfinished]);
    expect(s).toEqual([
      ['forward', 0, 4, false],
      ['attention', 1, 3, false],
      ['forward', 5, 7, true],
      ['attention', 7, 7, true],
    ]);
    expect(m.warnings.join()).toMatch(/1 state exits without a matching enter/);
    expect(m.actors.get(0)).toEqual(['step', 'router']);
  });

  it('matches collectives across ranks by group, members and seq, and names the members that never issued one', () => {
    const m = buildModel(
      sorted([
        co(0, 1, 'start', 0),
        co(1, 1, 'start', 2),
        co(0, 1, 'end', 3),
        co(1, 1, 'end', 3),
        co(0, 2, 'start', 4),
      ]),
    );
    expect(m.matches.map((x) => [x.seq, x.spans.map((i) => m.collectives[i]!.rank), x.missing])).toEqual([
      [1, [0, 1], []],
      [2, [0], [1]],
    ]);
    expect(m.collectives[2]!.unfinished).toBe(true);
  });
});

describe('self time', () => {
  const sl = (state: string, category: StateCategory, start: number, end: number): StateSlice => ({
    rank: 0,
    actor: 'a',
    machine: 'm',
    state,
    category,
    step: 0,
    layer: 0,
    microbatch: 0,
    start,
    end,
    unfinished: false,
  });
  it('gives each instant to the innermost slice, nested or overlapping, zero-length slices owning nothing', () => {
    const segs = innermostSegments([
      sl('outer', 'forward', 0, 10),
      sl('inner', 'compute', 2, 4),
      sl('late', 'other', 8, 12),
      sl('zero', 'other', 5, 5),
    ]);
    expect(segs.map((s) => [s.slice.state, s.start, s.end])).toEqual([
      ['outer', 0, 2],
      ['inner', 2, 4],
      ['outer', 4, 8],
      ['late', 8, 12],
    ]);
  });
  it('across rows, the category of highest priority wins', () => {
    const rowA = innermostSegments([sl('fwd', 'forward', 0, 10)]);
    const rowB = innermostSegments([sl('dispatch', 'dispatch', 2, 6), sl('compute', 'compute', 5, 7)]);
    const d = dominantSegments([rowA, rowB], CATEGORY_PRIORITY);
    expect(d.map((s) => [s.slice.state, s.start, s.end])).toEqual([
      ['fwd', 0, 2],
      ['dispatch', 2, 5],
      ['compute', 5, 7],
      ['fwd', 7, 10],
    ]);
  });
});

describe('summary', () => {
  // Rank 0: compute [0,10], a collective in flight [5,15] (dispatch state [5,15]), nothing [15,20], waiting [20,22].
  // Rank 1: joins the collective at 12 and leaves at 15.
  const events = sorted([
    st(0, 'expert', 'compute', 'compute', 'enter', 0),
    st(0, 'expert', 'compute', 'compute', 'exit', 10),
    st(0, 'router', 'dispatch', 'dispatch', 'enter', 5),
    co(0, 1, 'start', 5),
    co(0, 1, 'end', 15),
    st(0, 'router', 'dispatch', 'dispatch', 'exit', 15),
    st(0, 'step', 'wait', 'waiting', 'enter', 20, null),
    st(0, 'step', 'wait', 'waiting', 'exit', 22, null),
    co(1, 1, 'start', 12),
    co(1, 1, 'end', 15),
  ]);
  const sum = summarize(buildModel(events));
  it('computes HTA-style compute, comm, overlap and idle per rank', () => {
    const r0 = sum.rows.find((r) => r.layer === 'all' && r.rank === 0)!;
    expect(r0.windowMs).toBe(22);
    expect(r0.computeMs).toBe(10);
    expect(r0.commMs).toBe(10);
    expect(r0.overlapMs).toBe(5);
    expect(r0.overlapPct).toBe(50);
    // window 22 − (compute ∪ comm = [0,15]) = 7 (the gap and the explicit wait)
    expect(r0.idleMs).toBe(7);
    // Categories partition the time inside states: compute wins [5,10] over dispatch.
    expect(r0.byCategory).toMatchObject({ compute: 10, dispatch: 5, waiting: 2 });
    const r1 = sum.rows.find((r) => r.layer === 'all' && r.rank === 1)!;
    expect([r1.commMs, r1.overlapPct, r1.computeMs]).toEqual([3, 0, 0]);
  });
  it('restricts a layer to its own states and collectives', () => {
    const l0 = sum.rows.find((r) => r.layer === 0 && r.rank === 0)!;
    // Layer-0 window is [0,15]: the waiting state has no layer.
    expect([l0.windowMs, l0.commMs, l0.idleMs, l0.byCategory.waiting]).toEqual([15, 10, 0, 0]);
    expect(sum.layers).toEqual(['all', 0]);
  });
  it('renders one category table and one per-state table per layer', () => {
    const text = renderSummary(sum);
    expect(text).toMatch(/all layers/);
    expect(text).toMatch(/layer 0/);
    expect(text.split('\n').filter((l) => /^0 /.test(l))).toHaveLength(2);
    // Per-state self time, busiest first: rank 0's compute 10 ms, dispatch 10 ms, wait 2 ms; rank 1 has none.
    const states = text.split('\n').filter((l) => /^(expert|router|step):/.test(l));
    expect(states.slice(0, 3).map((l) => l.split(/ +/).slice(0, 3))).toEqual([
      ['expert:compute', '10.0', '–'],
      ['router:dispatch', '10.0', '–'],
      ['step:wait', '2.00', '–'],
    ]);
    expect(renderSummary(sum, { states: false })).not.toMatch(/state \(self ms\)/);
  });
});
