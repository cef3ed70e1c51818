// Time per protocol phase on one rank, for the metrics line/JSONL: how long the train-step machine spent in
// forward, backward, recompute, reduce and optimizer states, and how long collectives were in flight (the union
// of their intervals, so overlapping collectives count once) — compute vs communication vs waiting.

import type { EventSink, TraceEvent } from '../protocols/events.ts';

export class PhaseTimes implements EventSink {
  private acc: Record<string, number> = {};
  private readonly open = new Map<string, number>();
  private inflight = 0;
  private inflightSince = 0;

  record(e: TraceEvent): void {
    if (e.kind === 'state') {
      if (e.actor !== 'step' && e.category !== 'reduce' && e.category !== 'optimizer') return;
      const key = `${e.category}`;
      const id = `${e.actor}/${e.machine}/${e.state}/${e.layer}/${e.microbatch}`;
      if (e.phase === 'enter') this.open.set(id, e.t);
      else {
        const t0 = this.open.get(id);
        if (t0 !== undefined) {
          this.open.delete(id);
          this.acc[key] = (this.acc[key] ?? 0) + (e.t - t0);
        }
      }
    } else if (e.kind === 'collective') {
      if (e.phase === 'start') {
        if (this.inflight++ === 0) this.inflightSince = e.t;
      } else if (this.inflight > 0 && --this.inflight === 0) {
        this.acc.communication = (this.acc.communication ?? 0) + (e.t - this.inflightSince);
      }
    }
  }

  /** The milliseconds accumulated since the last take(), by phase. */
  take(): Record<string, number> {
    const out = this.acc;
    this.acc = {};
    return out;
  }
}
