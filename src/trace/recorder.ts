// The per-rank EventSink every actor writes to. Two jobs, both bounded in memory:
//   1. keep the newest `capacity` events in a ring (object references, no copy) for the live view and for a
//      post-mortem of a rank that is still alive;
//   2. when given a file, stream every event to `<file>` as JSON Lines, in batches of `flushEvery` events, up to
//      `maxFileEvents` (a long run must not fill the disk: ~250 bytes per event, hundreds of events per step and
//      rank); past it, events are counted and kept in the ring but not written, and the meta line says so.
//
// Why JSONL on disk rather than only a ring: a run's timeline needs *all* events, not the newest N, and a rank
// that dies must leave what it recorded behind (flushes are synchronous writes, so everything up to the last
// batch is on disk even if the process is killed; a timer and process exit flush the tail). Why batches: the hot
// path is an array store and a counter compare; serialisation happens once per `flushEvery` events, in one
// string and one write(2). The ring doubles as the batch buffer, so nothing is allocated per event.
//
// Contract for emitters: an event object must not be mutated after `record` (the ring keeps the reference).

import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { EventSink, TraceEvent } from '../protocols/events.ts';

/** A non-event line of an event file: who wrote it and how to put its times on the run's clock. */
export interface RecorderMeta {
  kind: 'meta';
  version: 1;
  rank: number;
  /** What `t` means in this file (before correction). */
  clock: string;
  /**
   * This rank's clock minus the reference clock (rank 0), in ms: aligned t = t − clockOffsetMs. Written by
   * `setClockOffset` (mpi); 0 when ranks share a clock (inproc, threads). The last meta line of a file wins.
   */
  clockOffsetMs: number;
  /** Half-width of the offset's confidence interval, ms (0 when not estimated). */
  clockUncertaintyMs: number;
  /** Set once the rank recorded more events than the file may hold: the file has the first this many. */
  truncatedAfter?: number;
}

export interface RecorderOptions {
  /** Rank this recorder belongs to (meta line); events carry their own rank too. */
  rank: number;
  /** JSON Lines file to stream to; memory only when omitted. */
  file?: string;
  /** Ring size, rounded up to a power of two (default 65 536 events). */
  capacity?: number;
  /** Events per write when streaming (default 4096, at most `capacity`). */
  flushEvery?: number;
  /** Also flush every this many ms, so a stalled rank's tail reaches disk (default 500; 0 disables). */
  flushIntervalMs?: number;
  /** Events written to the file at most (default: no limit); later ones stay in memory only. */
  maxFileEvents?: number;
}

const CLOCK = 'ms, performance.timeOrigin + performance.now()';

// One process exit hook for all open recorders (inproc runs many ranks, hence many recorders, in one process).
const openRecorders = new Set<TraceRecorder>();
let exitHooked = false;
function trackOpen(rec: TraceRecorder): void {
  openRecorders.add(rec);
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', () => {
      for (const r of [...openRecorders]) r.close();
    });
  }
}

export class TraceRecorder implements EventSink {
  readonly rank: number;
  readonly file: string | undefined;
  readonly capacity: number;
  private readonly mask: number;
  private readonly ring: (TraceEvent | undefined)[];
  private readonly flushEvery: number;
  /** Total events ever recorded. */
  private head = 0;
  /** Events [0, flushed) are on disk. */
  private flushed = 0;
  private fd = -1;
  private timer: NodeJS.Timeout | undefined;
  private bytes = 0;
  private readonly maxFileEvents: number;
  private offset: [number, number] = [0, 0];

  constructor(opts: RecorderOptions) {
    this.rank = opts.rank;
    this.file = opts.file;
    let cap = 1;
    while (cap < (opts.capacity ?? 65_536)) cap <<= 1;
    this.capacity = cap;
    this.mask = cap - 1;
    this.ring = new Array(cap).fill(undefined);
    this.flushEvery = Math.max(1, Math.min(opts.flushEvery ?? 4096, cap));
    this.maxFileEvents = opts.maxFileEvents ?? Infinity;
    if (!(this.maxFileEvents >= 1))
      throw new Error(`trace recorder (rank ${this.rank}): maxFileEvents must be ≥ 1 (got ${opts.maxFileEvents})`);
    if (opts.file) {
      mkdirSync(dirname(opts.file), { recursive: true });
      this.fd = openSync(opts.file, 'w');
      this.writeLine(this.metaLine());
      const every = opts.flushIntervalMs ?? 500;
      if (every > 0) {
        this.timer = setInterval(() => this.flush(), every);
        this.timer.unref();
      }
      trackOpen(this);
    }
  }

  record(e: TraceEvent): void {
    this.ring[this.head & this.mask] = e;
    this.head++;
    if (this.fd >= 0 && this.head - this.flushed >= this.flushEvery) this.flush();
  }

  /** Events recorded so far (including those no longer in the ring). */
  get count(): number {
    return this.head;
  }

  /** Events the file holds or will hold: min(count, maxFileEvents). */
  get fileEvents(): number {
    return Math.min(this.head, this.maxFileEvents);
  }

  /** Bytes written to the file so far. */
  get bytesWritten(): number {
    return this.bytes;
  }

  /** The newest min(count, capacity) events, oldest first. */
  recent(): TraceEvent[] {
    const n = Math.min(this.head, this.capacity);
    const out: TraceEvent[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.ring[(this.head - n + i) & this.mask]!;
    return out;
  }

  /**
   * Records this rank's clock offset (from `estimateClockOffset`) as a meta line; readers apply the last one to
   * every event of the file, so it may be called before or after events were written.
   */
  setClockOffset(offsetMs: number, uncertaintyMs: number): void {
    if (this.fd < 0) return;
    this.flush();
    this.offset = [offsetMs, uncertaintyMs];
    this.writeLine(this.metaLine());
  }

  /** Writes every pending event. Synchronous on purpose: see the header comment. */
  flush(): void {
    if (this.fd < 0 || this.flushed === this.head) return;
    if (this.head - this.flushed > this.capacity) {
      // Cannot happen while flushEvery ≤ capacity; a guard against silent loss if that invariant ever breaks.
      throw new Error(
        `trace recorder (rank ${this.rank}): ${this.head - this.flushed - this.capacity} events overwritten before flush`,
      );
    }
    const upTo = Math.min(this.head, this.maxFileEvents);
    let s = '';
    for (let i = this.flushed; i < upTo; i++) s += JSON.stringify(this.ring[i & this.mask]) + '\n';
    const crossed = this.flushed <= this.maxFileEvents && this.head > this.maxFileEvents;
    this.flushed = this.head;
    if (crossed) s += this.metaLine() + '\n';
    if (s) this.writeString(s);
  }

  /** Flushes and closes the file; the ring stays readable. Idempotent. */
  close(): void {
    if (this.fd < 0) return;
    this.flush();
    closeSync(this.fd);
    this.fd = -1;
    if (this.timer) clearInterval(this.timer);
    openRecorders.delete(this);
  }

  /** Readers take the last meta line, so each one carries everything known so far. */
  private metaLine(): string {
    const [clockOffsetMs, clockUncertaintyMs] = this.offset;
    const m: RecorderMeta = {
      kind: 'meta',
      version: 1,
      rank: this.rank,
      clock: CLOCK,
      clockOffsetMs,
      clockUncertaintyMs,
    };
    if (this.head > this.maxFileEvents) m.truncatedAfter = this.maxFileEvents;
    return JSON.stringify(m);
  }

  private writeLine(s: string): void {
    this.writeString(s + '\n');
  }

  private writeString(s: string): void {
    const buf = Buffer.from(s, 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(this.fd, buf, off, buf.length - off);
    this.bytes += buf.length;
  }
}

/** Fans one event out to several sinks (recorder + live view). */
export function teeSink(...sinks: { record(e: TraceEvent): void }[]): EventSink {
  if (sinks.length === 1) return sinks[0]!;
  return {
    record(e) {
      for (const s of sinks) s.record(e);
    },
  };
}
