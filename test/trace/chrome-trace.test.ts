// Schema test of trace.json on the committed synthetic runs: what Perfetto's JSON importer needs (validator) plus
// the conventions of this project (rank processes, actor threads, Kineto collective args, one flow per collective).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  nestLanes,
  serializeChromeTrace,
  toChromeTrace,
  type ChromeEvent,
  type ChromeTrace,
} from '../../src/trace/chrome-trace.ts';
import { validateChromeTrace } from '../../src/trace/chrome-validate.ts';
import { buildModel, type TraceModel } from '../../src/trace/model.ts';
import { loadRun } from '../../src/trace/run-dir.ts';

const FIX = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'trace');
const load = (name: string): { model: TraceModel; trace: ChromeTrace } => {
  const model = buildModel(loadRun(join(FIX, name)).events);
  // Round-trip through the serialised text: what a viewer reads.
  const trace = JSON.parse(serializeChromeTrace(toChromeTrace(model, { run: name }))) as ChromeTrace;
  return { model, trace };
};

const KINETO_ARGS = [
  'Collective name',
  'In msg nelems',
  'Out msg nelems',
  'dtype',
  'Group size',
  'Process Group Name',
  'Process Group Ranks',
  'Rank',
  'Seq',
];

describe.each(['ep4', 'hang'])('trace.json of %s', (name) => {
  const { model, trace } = load(name);
  const evs = trace.traceEvents;
  const phase = (ph: string) => evs.filter((e) => e.ph === ph);

  it('puts traceEvents first and writes no displayTimeUnit', () => {
    expect(Object.keys(trace)[0]).toBe('traceEvents');
    expect(trace).not.toHaveProperty('displayTimeUnit');
  });

  it('passes the Perfetto-importer checks', () => {
    const v = validateChromeTrace(trace);
    expect(v.errors).toEqual([]);
    expect(v.stats.processes).toBe(model.ranks.length);
    expect(v.stats.asyncPairs).toBe(model.collectives.length);
  });

  it('has one process per rank, named "rank N", and a thread per actor', () => {
    const procs = phase('M').filter((e) => e.name === 'process_name');
    expect(procs.map((e) => e.args!.name)).toEqual(model.ranks.map((r) => `rank ${r}`));
    for (const r of model.ranks) {
      const threads = phase('M')
        .filter((e) => e.name === 'thread_name' && e.pid === r + 1)
        .map((e) => String(e.args!.name));
      for (const a of model.actors.get(r)!) expect(threads).toContain(a);
    }
    // tids are unique across processes (Perfetto treats tids as system-wide).
    const tids = phase('M')
      .filter((e) => e.name === 'thread_name')
      .map((e) => e.tid);
    expect(new Set(tids).size).toBe(tids.length);
  });

  it('writes every state as an X slice with its context, in µs from the first event', () => {
    const xs = phase('X');
    expect(xs.length).toBe(model.slices.length);
    for (const x of xs) {
      expect(x.dur).toBeGreaterThanOrEqual(0);
      expect(x.args).toHaveProperty('machine');
      expect(x.args).toHaveProperty('layer');
      expect(x.args).toHaveProperty('microbatch');
    }
    const last = Math.max(...xs.map((x) => x.ts! + x.dur!));
    expect(last).toBeCloseTo((model.t1 - model.t0) * 1000, 0);
  });

  it('writes collectives as b/e pairs with Kineto argument names', () => {
    const bs = phase('b');
    const es = phase('e');
    expect(bs.length).toBe(model.collectives.length);
    expect(new Set(bs.map((b) => `${b.pid}/${b.id}`)).size).toBe(bs.length);
    for (const b of bs) {
      for (const k of KINETO_ARGS) expect(b.args, k).toHaveProperty([k]);
      expect(b.cat).toBe('collective');
      const e = es.find((x) => x.id === b.id && x.pid === b.pid)!;
      expect(e.name).toBe(b.name);
      expect(e.ts!).toBeGreaterThanOrEqual(b.ts!);
    }
  });

  it('links the ranks of each collective with one flow: the first arrival out, every other rank in', () => {
    const byFlow = new Map<number, ChromeEvent[]>();
    for (const b of phase('b'))
      if (b.bind_id !== undefined) byFlow.set(b.bind_id, [...(byFlow.get(b.bind_id) ?? []), b]);
    const multi = model.matches.filter((m) => m.spans.length > 1);
    expect(byFlow.size).toBe(multi.length);
    for (const group of byFlow.values()) {
      const out = group.filter((e) => e.flow_out);
      const into = group.filter((e) => e.flow_in);
      expect(out).toHaveLength(1);
      expect(into.length).toBe(group.length - 1);
      for (const e of into) expect(e.ts!).toBeGreaterThanOrEqual(out[0]!.ts!);
      const seqs = new Set(group.map((e) => `${e.args!['Process Group Name']}#${e.args!.Seq}`));
      expect(seqs.size).toBe(1);
    }
  });

  it('writes memory and byte counters', () => {
    const cs = phase('C');
    expect(cs.length).toBe(model.counters.length);
    expect(new Set(cs.map((c) => c.name))).toEqual(new Set(['memory', 'comm_bytes']));
  });
});

describe('the hang run in trace.json', () => {
  const { trace } = load('hang');
  it('marks the rank that never joined, and the waiting ranks’ failed collective', () => {
    const inst = trace.traceEvents.filter((e) => e.ph === 'i');
    expect(inst).toHaveLength(1);
    expect(inst[0]!.pid).toBe(3); // rank 2
    expect(inst[0]!.name).toMatch(/never joined all_to_all_v #\d+ on ep/);
    expect(inst[0]!.args!['waiting ranks']).toBe('0,1,3');
    const errs = trace.traceEvents.filter((e) => e.ph === 'e' && e.args?.error);
    expect(errs.map((e) => e.pid).sort()).toEqual([1, 2, 4]);
    // Rank 2's dispatch has no exit: it runs to the end, flagged.
    const open = trace.traceEvents.filter((e) => e.ph === 'X' && e.pid === 3 && e.args?.unfinished);
    expect(open.map((e) => e.name)).toContain('dispatch');
  });
});

describe('nestLanes', () => {
  it('puts slices that overlap without nesting on separate lanes, nested ones on the same', () => {
    // [0,10] ⊃ [2,4]; [8,12] overlaps [0,10]; [10,11] touches [0,10].
    expect(nestLanes([0, 2, 8, 10], [10, 4, 12, 11])).toEqual([0, 0, 1, 0]);
  });
});

describe('the validator itself', () => {
  const base = (): ChromeEvent[] => [
    { name: 'process_name', ph: 'M', pid: 1, args: { name: 'rank 0' } },
    { name: 'thread_name', ph: 'M', pid: 1, tid: 1000, args: { name: 'expert' } },
  ];
  const errs = (evs: ChromeEvent[]) => validateChromeTrace({ traceEvents: evs }).errors.join('\n');
  it('catches overlapping X slices on one thread', () => {
    expect(
      errs([
        ...base(),
        { name: 'a', ph: 'X', pid: 1, tid: 1000, ts: 0, dur: 10 },
        { name: 'b', ph: 'X', pid: 1, tid: 1000, ts: 5, dur: 10 },
      ]),
    ).toMatch(/without nesting/);
  });
  it('catches time going back on a thread', () => {
    expect(
      errs([
        ...base(),
        { name: 'a', ph: 'X', pid: 1, tid: 1000, ts: 5, dur: 1 },
        { name: 'b', ph: 'X', pid: 1, tid: 1000, ts: 1, dur: 1 },
      ]),
    ).toMatch(/goes back/);
  });
  it('catches an async begin without an end and an end without a begin', () => {
    const e = errs([
      ...base(),
      { name: 'x', cat: 'c', ph: 'b', id: '1', pid: 1, tid: 1000, ts: 0 },
      { name: 'y', cat: 'c', ph: 'e', id: '2', pid: 1, tid: 1000, ts: 1 },
    ]);
    expect(e).toMatch(/never ends/);
    expect(e).toMatch(/async end without a begin/);
  });
  it('catches flows that start without an end, or end before their start', () => {
    expect(
      errs([...base(), { name: 'x', cat: 'c', ph: 'X', pid: 1, tid: 1000, ts: 0, dur: 1, bind_id: 7, flow_out: true }]),
    ).toMatch(/flow 7 starts but never ends/);
    expect(
      errs([
        ...base(),
        { name: 'x', cat: 'c', ph: 'X', pid: 1, tid: 1000, ts: 0, dur: 1, bind_id: 7, flow_in: true },
        { name: 'y', cat: 'c', ph: 'X', pid: 1, tid: 1000, ts: 2, dur: 1, bind_id: 7, flow_out: true },
      ]),
    ).toMatch(/precedes its start/);
  });
  it('catches a displayTimeUnit (Perfetto rescales ts by it) and unknown keys before the events', () => {
    expect(validateChromeTrace({ displayTimeUnit: 'ms', traceEvents: base() }).errors.join()).toMatch(
      /Perfetto reads every ts in this unit/,
    );
    expect(validateChromeTrace({ extra: 1, traceEvents: base() }).errors.join()).toMatch(/"extra" before traceEvents/);
  });
  it('catches unnamed processes and threads, and non-numeric counters', () => {
    const e = errs([
      { name: 'a', ph: 'X', pid: 9, tid: 9, ts: 0, dur: 1 },
      { name: 'c', ph: 'C', pid: 9, tid: 9, ts: 0, args: { v: 'x' } },
    ]);
    expect(e).toMatch(/pid 9 has no process_name/);
    expect(e).toMatch(/thread 9\/9 has no thread_name/);
    expect(e).toMatch(/not a number/);
  });
});
