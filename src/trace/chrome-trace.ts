// Chrome Trace Event JSON for Perfetto (ui.perfetto.dev) and chrome://tracing, following what Perfetto's JSON
// importer actually does (perfetto src/trace_processor/importers/json/json_trace_parser_impl.cc):
//
//   process = rank: pid = rank + 1, named "rank N" (pid 0 is the idle/swapper process in Perfetto's model);
//   thread = actor: tid = (rank + 1)·1000 + lane, named by the actor. B/E/X slices must nest per thread, so states
//     of one actor that overlap without nesting (several FSDP unit machines) go to extra lanes "fsdp ·2";
//   states: X slices (µs, relative to the run's first event; the absolute origin is in otherData);
//   collectives: async b/e per rank, cat "collective", id unique per (rank, group, seq) — a plain `id` is global
//     in Perfetto, so ranks must not share one — with PyTorch/Kineto arg names so HTA-style tools apply;
//   collective links: flow v2 (`bind_id` + `flow_out`/`flow_in`) on the b events. Flow v1 s/f events are always
//     resolved against the *thread* track's open slice, so they cannot attach to async collective slices; v2 binds
//     to the event's own slice. The earliest arrival gets flow_out and every other rank's slice flow_in with the
//     same id: Perfetto keeps a v2 flow open after an end, so this draws one arrow per rank from the first
//     arrival, and the arrow lengths show the arrival skew. (The source must be processed first, hence earliest.)
//   counters: C events per rank (memory, comm bytes);
//   ranks that a collective waited for and never joined get a process-scoped instant at their last event.

import { writeFileSync } from 'node:fs';
import type { CollectiveEvent } from '../protocols/events.ts';
import type { CollectiveSpan, StateSlice, TraceModel } from './model.ts';
import { runPaths } from './run-dir.ts';

export interface ChromeEvent {
  name: string;
  ph: string;
  pid: number;
  tid?: number;
  ts?: number;
  dur?: number;
  cat?: string;
  id?: string;
  s?: string;
  bind_id?: number;
  flow_in?: boolean;
  flow_out?: boolean;
  args?: Record<string, unknown>;
}

/**
 * No `displayTimeUnit`: the spec says it only affects display, but Perfetto's importer reads `ts` in that unit
 * (json_tracker.h: CoerceToTs(time_unit_, …)), so "ms" would stretch µs timestamps 1000×. µs is the default.
 */
export interface ChromeTrace {
  traceEvents: ChromeEvent[];
  otherData: Record<string, unknown>;
}

export const pidOf = (rank: number) => rank + 1;

/** Kineto writes c10 scalar type names. */
const KINETO_DTYPE: Record<CollectiveEvent['dtype'], string> = {
  float32: 'Float',
  float64: 'Double',
  int32: 'Int',
  bfloat16: 'BFloat16',
};

/** Kineto truncates "Process Group Ranks" past 30 ranks. */
function groupRanksArg(ranks: readonly number[]): string {
  return ranks.length > 30 ? `[${ranks.slice(0, 30).join(', ')}, ...]` : `[${ranks.join(', ')}]`;
}

export function collectiveArgs(c: CollectiveSpan): Record<string, unknown> {
  return {
    'Collective name': c.op,
    'In msg nelems': c.inNelems,
    'Out msg nelems': c.outNelems,
    dtype: KINETO_DTYPE[c.dtype],
    'Group size': c.groupRanks.length,
    'Process Group Name': c.group,
    'Process Group Ranks': groupRanksArg(c.groupRanks),
    Rank: c.rank,
    Seq: c.seq,
    'Bytes sent': c.bytesSent,
    'Bytes received': c.bytesReceived,
    Tag: c.tag,
    step: c.step,
    layer: c.layer,
    microbatch: c.microbatch,
  };
}

/**
 * Lanes so that X slices nest on every thread: a slice goes to the first lane whose open slices all contain it.
 * Works on integer ns so it agrees exactly with the µs values written out. Returns lane per slice index.
 */
export function nestLanes(starts: readonly number[], ends: readonly number[]): number[] {
  const order = starts.map((_, i) => i).sort((a, b) => starts[a]! - starts[b]! || ends[b]! - ends[a]!);
  const lanes: number[][] = [];
  const lane = new Array<number>(starts.length).fill(0);
  for (const i of order) {
    let k = 0;
    for (; ; k++) {
      if (k === lanes.length) lanes.push([]);
      const stack = lanes[k]!;
      while (stack.length > 0 && ends[stack[stack.length - 1]!]! <= starts[i]!) stack.pop();
      if (stack.length === 0 || ends[stack[stack.length - 1]!]! >= ends[i]!) {
        stack.push(i);
        break;
      }
    }
    lane[i] = k;
  }
  return lane;
}

export interface ChromeOptions {
  run?: string;
}

export function toChromeTrace(model: TraceModel, opts: ChromeOptions = {}): ChromeTrace {
  const t0 = model.t0;
  const ns = (t: number) => Math.round((t - t0) * 1e6);
  const us = (n: number) => n / 1000;
  const meta: ChromeEvent[] = [];
  const body: ChromeEvent[] = [];
  // Tie order at equal ts: ends of async slices, X (longer first via dur), flow sources, other b, the rest.
  const tie: number[] = [];
  const push = (e: ChromeEvent, k: number) => {
    body.push(e);
    tie.push(k);
  };

  const tids = new Map<string, number>();
  const tidFor = (rank: number, actor: string, lane: number) => tids.get(`${rank}\u0000${actor}\u0000${lane}`)!;

  const slicesByRow = new Map<string, StateSlice[]>();
  for (const s of model.slices) {
    const k = `${s.rank}\u0000${s.actor}`;
    let a = slicesByRow.get(k);
    if (!a) slicesByRow.set(k, (a = []));
    a.push(s);
  }

  for (const rank of model.ranks) {
    const pid = pidOf(rank);
    meta.push({ name: 'process_name', ph: 'M', pid, args: { name: `rank ${rank}` } });
    meta.push({ name: 'process_sort_index', ph: 'M', pid, args: { sort_index: rank } });
    let next = 0;
    const actors = model.actors.get(rank) ?? [];
    const rowLanes = new Map<string, { slices: StateSlice[]; lane: number[]; n: number }>();
    for (const actor of actors) {
      const slices = slicesByRow.get(`${rank}\u0000${actor}`) ?? [];
      const lane = nestLanes(
        slices.map((s) => ns(s.start)),
        slices.map((s) => ns(s.end)),
      );
      const n = lane.reduce((a, l) => Math.max(a, l + 1), 1);
      rowLanes.set(actor, { slices, lane, n });
      for (let l = 0; l < n; l++) {
        const tid = pid * 1000 + next++;
        tids.set(`${rank}\u0000${actor}\u0000${l}`, tid);
        meta.push({ name: 'thread_name', ph: 'M', pid, tid, args: { name: l === 0 ? actor : `${actor} ·${l + 1}` } });
        meta.push({ name: 'thread_sort_index', ph: 'M', pid, tid, args: { sort_index: tid } });
      }
    }
    for (const [actor, { slices, lane }] of rowLanes) {
      slices.forEach((s, i) => {
        const a = ns(s.start);
        const args: Record<string, unknown> = {
          machine: s.machine,
          state: s.state,
          category: s.category,
          step: s.step,
          layer: s.layer,
          microbatch: s.microbatch,
        };
        if (s.unfinished) args.unfinished = 'no exit recorded: the rank stopped or the run ended in this state';
        push(
          {
            name: s.state,
            cat: s.category,
            ph: 'X',
            pid,
            tid: tidFor(rank, actor, lane[i]!),
            ts: us(a),
            dur: us(ns(s.end) - a),
            args,
          },
          1,
        );
      });
    }
  }

  let flowId = 0;
  const flowOf = new Map<number, { id: number; source: boolean }>();
  for (const m of model.matches) {
    if (m.spans.length < 2) continue;
    const id = ++flowId;
    m.spans.forEach((ci, j) => flowOf.set(ci, { id, source: j === 0 }));
  }
  model.collectives.forEach((c, ci) => {
    const pid = pidOf(c.rank);
    const tid = tids.get(`${c.rank}\u0000${c.actor}\u00000`) ?? pid * 1000;
    const id = `${c.rank}:${c.group}:${c.seq}`;
    const flow = flowOf.get(ci);
    const b: ChromeEvent = {
      name: c.op,
      cat: 'collective',
      ph: 'b',
      id,
      pid,
      tid,
      ts: us(ns(c.start)),
      args: collectiveArgs(c),
    };
    if (flow) {
      b.bind_id = flow.id;
      if (flow.source) b.flow_out = true;
      else b.flow_in = true;
    }
    push(b, flow?.source ? 2 : 3);
    const endArgs: Record<string, unknown> = {};
    if (c.error) endArgs.error = c.error;
    if (c.unfinished) endArgs.unfinished = 'no end recorded: still in flight when the trace stops';
    push({ name: c.op, cat: 'collective', ph: 'e', id, pid, tid, ts: us(ns(c.end)), args: endArgs }, 0);
  });

  for (const ctr of model.counters) {
    const pid = pidOf(ctr.rank);
    const actors = model.actors.get(ctr.rank) ?? [];
    const tid = actors.length > 0 ? tidFor(ctr.rank, actors[0]!, 0) : pid * 1000;
    push({ name: ctr.name, ph: 'C', pid, tid, ts: us(ns(ctr.t)), args: { ...ctr.values } }, 4);
  }

  for (const m of model.matches) {
    for (const r of m.missing) {
      const last = model.lastEventT.get(r);
      if (last === undefined) continue;
      push(
        {
          name: `never joined ${m.op} #${m.seq} on ${m.group}`,
          cat: 'hang',
          ph: 'i',
          s: 'p',
          pid: pidOf(r),
          tid: pidOf(r) * 1000,
          ts: us(ns(last)),
          args: {
            'waiting ranks': m.spans
              .map((i) => model.collectives[i]!.rank)
              .sort((a, b) => a - b)
              .join(','),
          },
        },
        5,
      );
    }
  }

  const order = body.map((_, i) => i);
  order.sort((i, j) => body[i]!.ts! - body[j]!.ts! || tie[i]! - tie[j]! || (body[j]!.dur ?? 0) - (body[i]!.dur ?? 0));
  const traceEvents: ChromeEvent[] = meta;
  for (const i of order) traceEvents.push(body[i]!);
  return {
    traceEvents,
    otherData: {
      generator: 'moe-actors trace',
      run: opts.run ?? null,
      // Absolute origin of ts = 0, in ms on rank 0's clock (performance.timeOrigin-based).
      t0Ms: t0,
      ranks: model.ranks.length,
      pidIsRankPlusOne: true,
    },
  };
}

/**
 * JSON with one event per line: diffable, and streamable by line-oriented tools. traceEvents comes first:
 * Perfetto's tokenizer stops at the first top-level key it does not know, and older versions do not know
 * otherData, so everything after the events is optional to it.
 */
export function serializeChromeTrace(trace: ChromeTrace): string {
  const lines = trace.traceEvents.map((e) => JSON.stringify(e));
  return `{"traceEvents":[\n${lines.join(',\n')}\n],\n"otherData":${JSON.stringify(trace.otherData)}}\n`;
}

export function writeChromeTrace(runDir: string, model: TraceModel, opts: ChromeOptions = {}): string {
  const file = runPaths(runDir).trace;
  writeFileSync(file, serializeChromeTrace(toChromeTrace(model, opts)));
  return file;
}
