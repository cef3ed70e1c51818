// A terminal view of a running job: one line per rank with its step, layer, microbatch, what it is doing now and
// for how long, and the collective it waits in. It is an EventSink, so `train --live` tees the actors' events into
// it (teeSink(recorder, liveView)) and calls start()/stop().
//   - stdout is a TTY: the block of lines is redrawn in place (cursor up + erase line), a few times a second,
//     each line cut to the terminal width so nothing wraps and the cursor arithmetic stays right;
//   - otherwise (CI logs, `| tee`): plain lines, one block every `plainIntervalMs`, no escape codes.
// A rank whose last event is older than `stallMs` is flagged: in a hang, that is the rank to look at first.

import pc from 'picocolors';
import { nowMs } from '../comm/flight-recorder.ts';
import type { EventSink, StateCategory, TraceEvent } from '../protocols/events.ts';

export interface LiveOutput {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface LiveViewOptions {
  out?: LiveOutput;
  /** Redraw period on a TTY, ms (default 250). */
  intervalMs?: number;
  /** Period of plain status blocks when not a TTY, ms (default 10 000). */
  plainIntervalMs?: number;
  /** Flag a rank as stalled after this long without events, ms (default 5000). */
  stallMs?: number;
  /** Colour (default: when the output is a TTY). */
  color?: boolean;
  /** Clock of the events (default the recorder's). */
  now?: () => number;
}

interface OpenState {
  actor: string;
  state: string;
  category: StateCategory;
  since: number;
  key: string;
  layer: number | null;
  microbatch: number | null;
}

interface RankState {
  rank: number;
  step: number | null;
  layer: number | null;
  microbatch: number | null;
  open: OpenState[];
  colls: Map<string, { op: string; group: string; seq: number; since: number }>;
  lastT: number;
  failed: string | null;
  events: number;
}

const CAT_COLOR: Record<StateCategory, (s: string) => string> = {
  dispatch: pc.blue,
  compute: pc.green,
  combine: pc.cyan,
  forward: pc.white,
  recompute: pc.yellow,
  backward: pc.yellow,
  reduce: pc.magenta,
  optimizer: pc.yellow,
  waiting: pc.red,
  other: pc.gray,
};

function dur(ms: number): string {
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

/** A line as coloured parts, so it can be cut to the terminal width before escape codes are added. */
type Part = { text: string; color?: (s: string) => string };

function fit(parts: Part[], width: number, color: boolean): string {
  let left = width;
  let out = '';
  for (const p of parts) {
    if (left <= 0) break;
    const t = p.text.length > left ? `${p.text.slice(0, Math.max(0, left - 1))}…` : p.text;
    left -= t.length;
    out += color && p.color ? p.color(t) : t;
  }
  return out;
}

export class LiveView implements EventSink {
  private readonly ranks = new Map<number, RankState>();
  private readonly out: LiveOutput;
  private readonly tty: boolean;
  private readonly color: boolean;
  private readonly now: () => number;
  private readonly opts: Required<Pick<LiveViewOptions, 'intervalMs' | 'plainIntervalMs' | 'stallMs'>>;
  private drawnLines = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly started: number;

  constructor(opts: LiveViewOptions = {}) {
    this.out = opts.out ?? process.stdout;
    this.tty = !!this.out.isTTY;
    this.color = opts.color ?? this.tty;
    this.now = opts.now ?? nowMs;
    this.opts = {
      intervalMs: opts.intervalMs ?? 250,
      plainIntervalMs: opts.plainIntervalMs ?? 10_000,
      stallMs: opts.stallMs ?? 5000,
    };
    this.started = this.now();
  }

  record(e: TraceEvent): void {
    let r = this.ranks.get(e.rank);
    if (!r) {
      r = {
        rank: e.rank,
        step: null,
        layer: null,
        microbatch: null,
        open: [],
        colls: new Map(),
        lastT: e.t,
        failed: null,
        events: 0,
      };
      this.ranks.set(e.rank, r);
    }
    r.events++;
    if (e.t > r.lastT) r.lastT = e.t;
    if (e.kind === 'counter') return;
    r.step = e.step;
    if (e.layer !== null) r.layer = e.layer;
    if (e.microbatch !== null) r.microbatch = e.microbatch;
    if (e.kind === 'state') {
      const key = `${e.actor}\u0000${e.machine}\u0000${e.state}\u0000${e.layer}\u0000${e.microbatch}`;
      if (e.phase === 'enter')
        r.open.push({
          actor: e.actor,
          state: e.state,
          category: e.category,
          since: e.t,
          key,
          layer: e.layer,
          microbatch: e.microbatch,
        });
      else {
        for (let i = r.open.length - 1; i >= 0; i--) {
          if (r.open[i]!.key === key) {
            r.open.splice(i, 1);
            break;
          }
        }
      }
    } else {
      const key = `${e.group}#${e.seq}`;
      if (e.phase === 'start') r.colls.set(key, { op: e.op, group: e.group, seq: e.seq, since: e.t });
      else {
        r.colls.delete(key);
        if (e.error) r.failed = `${e.op} #${e.seq} on ${e.group}: ${e.error.split('\n', 1)[0]}`;
      }
    }
  }

  /** The current lines, without escape codes when colour is off. */
  lines(width = Infinity): string[] {
    const now = this.now();
    const rows = [...this.ranks.values()].sort((a, b) => a.rank - b.rank);
    return rows.map((r) => {
      const parts: Part[] = [{ text: `rank ${String(r.rank).padEnd(3)}`, color: pc.bold }];
      const cur = r.open[r.open.length - 1];
      // The layer of what the rank is doing now (its newest open state), not of the last event: a prefetch of
      // layer l+1 must not make a rank stuck in layer l's dispatch read as layer l+1.
      const layer = cur?.layer ?? r.layer;
      const mb = cur?.microbatch ?? r.microbatch;
      parts.push({ text: ` step ${r.step ?? '–'}  layer ${layer ?? '–'}  mb ${mb ?? '–'}  ` });
      if (cur) {
        parts.push({ text: `${cur.actor}:`, color: pc.dim });
        parts.push({ text: cur.state, color: CAT_COLOR[cur.category] });
        parts.push({ text: ` ${dur(now - cur.since)}` });
      } else parts.push({ text: 'idle', color: pc.dim });
      const waiting = [...r.colls.values()].sort((a, b) => a.since - b.since)[0];
      if (waiting)
        parts.push({
          text: `  ⟂ ${waiting.op} #${waiting.seq} on ${waiting.group} ${dur(now - waiting.since)}`,
          color: pc.yellow,
        });
      if (r.failed) parts.push({ text: `  FAILED ${r.failed}`, color: pc.red });
      else if (now - r.lastT > this.opts.stallMs)
        parts.push({ text: `  no events for ${dur(now - r.lastT)}`, color: pc.red });
      return fit(parts, width, this.color);
    });
  }

  /** Draws now: in place on a TTY, as a plain block otherwise. */
  refresh(): void {
    if (this.tty) {
      const width = Math.max(20, (this.out.columns ?? 100) - 1);
      const lines = this.lines(width);
      let s = this.drawnLines > 0 ? `\x1b[${this.drawnLines}F` : '';
      for (const l of lines) s += `\x1b[2K${l}\n`;
      // Rank count only grows, so there are never stale lines below the block.
      this.out.write(s);
      this.drawnLines = lines.length;
    } else {
      const lines = this.lines();
      if (lines.length === 0) return;
      const head = `[live +${dur(this.now() - this.started)}]`;
      this.out.write(lines.map((l) => `${head} ${l}\n`).join(''));
    }
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.refresh(), this.tty ? this.opts.intervalMs : this.opts.plainIntervalMs);
    this.timer.unref();
  }

  /** Stops refreshing and draws the final state once. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.refresh();
  }
}
