// A per-rank ring buffer of every collective, in the spirit of PyTorch's NCCL flight recorder (anchors.md §3):
// one record schema for all transports, dumped on timeout or error, diffed across ranks by `inspect`.

import type { CollectiveOp } from './communicator.ts';

export type EntryState = 'scheduled' | 'started' | 'completed' | 'failed';

export interface FlightEntry {
  /** Per-rank record id, increasing. */
  id: number;
  group: string;
  /** World ranks of the group in group order. */
  groupRanks: readonly number[];
  /** Per-group collective sequence number, starting at 1 (torch's collective_seq_id). */
  seq: number;
  op: CollectiveOp;
  /** e.g. "sum", "premul_sum(0.25)", for reductions. */
  reduceOp?: string;
  tag: string | null;
  dtype: 'float32' | 'float64' | 'int32' | 'bfloat16';
  inNelems: number;
  outNelems: number;
  /** Per-rank split sizes for v-collectives, as torch's "In split size"/"Out split size". */
  inSplits?: readonly number[];
  outSplits?: readonly number[];
  /** broadcast: the root's group rank (members must agree on it). */
  root?: number;
  state: EntryState;
  /** Milliseconds (performance.timeOrigin-based wall clock). */
  tCreated: number;
  tStarted: number | null;
  tCompleted: number | null;
  timeoutMs: number;
  error?: string;
}

export interface GroupStatus {
  group: string;
  groupRanks: readonly number[];
  lastEnqueued: number;
  lastStarted: number;
  lastCompleted: number;
}

export interface FlightDump {
  version: 1;
  rank: number;
  worldSize: number;
  backend: string;
  pid: number;
  /** Why the dump was taken: "timeout in all_gather #57 on ep", "on demand", … */
  reason: string;
  tDump: number;
  groups: GroupStatus[];
  entries: FlightEntry[];
}

export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

export class FlightRecorder {
  private readonly ring: (FlightEntry | undefined)[];
  private next = 0;
  private nextId = 0;
  private readonly status = new Map<string, GroupStatus>();
  private readonly failListeners: ((entry: FlightEntry) => void)[] = [];

  constructor(
    readonly rank: number,
    readonly worldSize: number,
    readonly backend: string,
    readonly capacity = 2000,
  ) {
    this.ring = new Array(capacity);
  }

  /** A new entry in state 'scheduled'. The caller mutates it through start/complete/fail. */
  schedule(e: Omit<FlightEntry, 'id' | 'state' | 'tCreated' | 'tStarted' | 'tCompleted'>): FlightEntry {
    // Field by field, not `{ ...e }`: V8 copies a spread whose source holds undefined-valued fields (the optional
    // ones) through its slow runtime path, ~6 µs per entry — a fifth of an mpi collective's fixed cost.
    const entry: FlightEntry = {
      id: this.nextId++,
      group: e.group,
      groupRanks: e.groupRanks,
      seq: e.seq,
      op: e.op,
      reduceOp: e.reduceOp,
      tag: e.tag,
      dtype: e.dtype,
      inNelems: e.inNelems,
      outNelems: e.outNelems,
      inSplits: e.inSplits,
      outSplits: e.outSplits,
      root: e.root,
      state: 'scheduled',
      tCreated: nowMs(),
      tStarted: null,
      tCompleted: null,
      timeoutMs: e.timeoutMs,
    };
    if (e.error !== undefined) entry.error = e.error;
    this.ring[this.next] = entry;
    this.next = (this.next + 1) % this.capacity;
    this.groupStatus(e.group, e.groupRanks).lastEnqueued = e.seq;
    return entry;
  }

  start(entry: FlightEntry): void {
    entry.state = 'started';
    entry.tStarted = nowMs();
    this.groupStatus(entry.group, entry.groupRanks).lastStarted = entry.seq;
  }

  complete(entry: FlightEntry): void {
    entry.state = 'completed';
    entry.tCompleted = nowMs();
    this.groupStatus(entry.group, entry.groupRanks).lastCompleted = entry.seq;
  }

  fail(entry: FlightEntry, error: string): void {
    entry.state = 'failed';
    entry.tCompleted = nowMs();
    entry.error = error;
    // Listeners write dumps (dump-on-failure); one that throws must not turn a collective error into another one.
    for (const l of this.failListeners) {
      try {
        l(entry);
      } catch (err) {
        console.error(
          `flight recorder of rank ${this.rank}: failure listener threw: ${(err as Error)?.message ?? err}`,
        );
      }
    }
  }

  /** Calls `listener` after every entry that fails (timeout, peer death, mismatch); returns an unsubscribe. */
  onFail(listener: (entry: FlightEntry) => void): () => void {
    this.failListeners.push(listener);
    return () => {
      const i = this.failListeners.indexOf(listener);
      if (i >= 0) this.failListeners.splice(i, 1);
    };
  }

  /** Collectives recorded so far (a progress counter for watchdogs). */
  get issued(): number {
    return this.nextId;
  }

  /** Entries oldest first. */
  entries(): FlightEntry[] {
    const out: FlightEntry[] = [];
    for (let i = 0; i < this.capacity; i++) {
      const e = this.ring[(this.next + i) % this.capacity];
      if (e) out.push(e);
    }
    return out;
  }

  /** The newest entry that has not completed, if any: what this rank is waiting in. */
  pending(): FlightEntry | undefined {
    const all = this.entries();
    for (let i = all.length - 1; i >= 0; i--) {
      const e = all[i]!;
      if (e.state === 'scheduled' || e.state === 'started') return e;
    }
    return undefined;
  }

  dump(reason: string): FlightDump {
    return {
      version: 1,
      rank: this.rank,
      worldSize: this.worldSize,
      backend: this.backend,
      pid: process.pid,
      reason,
      tDump: nowMs(),
      groups: [...this.status.values()].map((s) => ({ ...s })),
      entries: this.entries().map((e) => ({ ...e })),
    };
  }

  private groupStatus(group: string, groupRanks: readonly number[]): GroupStatus {
    let s = this.status.get(group);
    if (!s) {
      s = { group, groupRanks, lastEnqueued: 0, lastStarted: 0, lastCompleted: 0 };
      this.status.set(group, s);
    }
    return s;
  }
}
