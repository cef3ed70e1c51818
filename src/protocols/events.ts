// The event schema actors emit and the trace layer consumes (Perfetto JSON, HTML timeline, terminal view,
// summaries). Pure data: no clocks, no I/O. Times are milliseconds on the run's aligned clock
// (performance.timeOrigin + performance.now() on threads; offset-corrected under mpi).

/** Colour classes of the timeline; every state maps to one. */
export type StateCategory =
  | 'dispatch'
  | 'compute'
  | 'combine'
  | 'forward'
  | 'recompute'
  | 'backward'
  | 'reduce'
  | 'optimizer'
  | 'waiting'
  | 'other';

/** A machine entered or left a state. `actor` is the thread row: "router", "expert", "fsdp", "optimizer", "step". */
export interface StateEvent {
  kind: 'state';
  rank: number;
  actor: string;
  machine: string;
  state: string;
  category: StateCategory;
  phase: 'enter' | 'exit';
  t: number;
  step: number;
  layer: number | null;
  microbatch: number | null;
}

/** A collective was issued ('start') or completed ('end') on one rank. Matched across ranks by (group, seq). */
export interface CollectiveEvent {
  kind: 'collective';
  rank: number;
  actor: string;
  op: string;
  group: string;
  /** World ranks of the group, in group order. */
  groupRanks: readonly number[];
  seq: number;
  phase: 'start' | 'end';
  t: number;
  dtype: 'float32' | 'float64' | 'int32' | 'bfloat16';
  inNelems: number;
  outNelems: number;
  bytesSent: number;
  bytesReceived: number;
  tag: string | null;
  step: number;
  layer: number | null;
  microbatch: number | null;
  /** Set on 'end' when the call failed (timeout, peer death, mismatch). */
  error?: string;
}

/** A sampled value: memory by category, cumulative bytes per group. */
export interface CounterEvent {
  kind: 'counter';
  rank: number;
  name: string;
  t: number;
  values: Record<string, number>;
}

export type TraceEvent = StateEvent | CollectiveEvent | CounterEvent;

/** Where actors send their events. Implementations must be cheap: they sit on the hot path. */
export interface EventSink {
  record(e: TraceEvent): void;
}

export const nullSink: EventSink = { record() {} };
