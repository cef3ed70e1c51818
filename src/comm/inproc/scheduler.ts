// The seeded scheduler of the inproc transport. Every arrival of a rank at a collective and every delivery of a
// result goes through it as an event; it runs one event per macrotask, picked by a seeded generator among the
// ready ones. Between two events the microtasks of the rank that was resumed run to its next collective, so the
// interleaving of ranks is a function of the seed alone (for programs that wait only on collectives): the same seed
// replays a schedule, other seeds explore others.

export interface SchedulerEvent {
  /** Stable description, recorded in the schedule log ("arrive r2 all_gather #5 on world"). */
  label: string;
  run: () => void;
}

/** splitmix32: a seed → a sequence of uint32. Small and well mixed even for seeds 0, 1, 2, … */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class SeededScheduler {
  private readonly ready: SchedulerEvent[] = [];
  /** Delayed events not yet posted. */
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private readonly random: () => number;
  private stepQueued = false;
  private readonly logLimit: number;
  private readonly logged: string[] = [];
  /** Events processed so far; a stall detector compares it over time. */
  progress = 0;
  /** Called when the ready queue has drained (after an event ran and none is left). */
  onIdle: (() => void) | undefined;

  constructor(seed: number, logLimit = 100_000) {
    this.random = seededRandom(seed);
    this.logLimit = logLimit;
  }

  post(label: string, run: () => void): void {
    this.ready.push({ label, run });
    this.kick();
  }

  /** Posts after a wall-clock delay (the 'delay' fault); the scheduler counts as busy meanwhile. */
  postAfter(ms: number, label: string, run: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.post(label, run);
    }, ms);
    this.timers.add(t);
  }

  /** Drops every delayed event not yet posted (the run was stopped; a pending timer would keep the process up). */
  cancelDelayed(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  /** Events are ready or delayed events are pending. */
  get busy(): boolean {
    return this.ready.length > 0 || this.timers.size > 0;
  }

  /** Labels of the events run so far, in order (the first `logLimit`). */
  log(): readonly string[] {
    return this.logged;
  }

  private kick(): void {
    if (this.stepQueued) return;
    this.stepQueued = true;
    setImmediate(this.step);
  }

  private readonly step = (): void => {
    this.stepQueued = false;
    if (this.ready.length === 0) {
      this.onIdle?.();
      return;
    }
    const i = this.ready.length === 1 ? 0 : this.random() % this.ready.length;
    const ev = this.ready[i]!;
    // Swap-remove: order within the ready set carries no meaning, the pick is random anyway.
    this.ready[i] = this.ready[this.ready.length - 1]!;
    this.ready.pop();
    this.progress++;
    if (this.logged.length < this.logLimit) this.logged.push(ev.label);
    try {
      ev.run();
    } finally {
      // Run again even when empty: the microtasks of this event may post more, and if not, the step reports idle.
      this.kick();
    }
  };
}
