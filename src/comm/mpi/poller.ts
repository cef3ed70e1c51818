// Drives MPI progress from the event loop. MPICH advances nonblocking collectives only inside MPI calls (no
// async progress thread by default), so each pending request is tested with MPI_Test on every turn of the loop
// (setImmediate): timers — the collective timeouts — and the control plane keep running during a wait.
//
// Each turn hands all pending requests to the binding's progress(), which keeps calling MPI_Test until one of them
// completes or BUDGET_US has passed (large transfers advance a few fragments per test), then yields to the event
// loop. Every yield costs a loop turn, a fault-channel test and the call's set-up, during which nothing moves: with
// 50 µs slices an all_gather of 16 MiB per rank on 2 ranks took 6.27 ms against the C program's 5.07 (median of 8
// alternating jobs; C/transport 0.81), with 1 ms slices 5.55 (0.92), with 2 ms 5.54; at 1 MiB the budget does not
// matter (0.23-0.24 ms, C 0.19). So the default is 1 ms: timers and the control plane wait at most that long.
//
// Spinning costs a core per waiting rank, which hurts when ranks oversubscribe cores or when a peer is late by
// seconds. So a request is polled on every turn only for as long as its transfer could plausibly take
// (SPIN_BASE_MS + its bytes at 1 GB/s); after that the rank is waiting for a peer, not for data, and the poller
// backs off to one pass per BACKOFF_MS. Each turn also checks the fault channel (faults.cc).

import { CollectiveError } from '../errors.ts';
import type { MpiBinding } from './native.ts';

const SPIN_BASE_MS = Number(process.env.MOE_ACTORS_MPI_SPIN_MS ?? 50);
const SPIN_MS_PER_MB = 1;
const BACKOFF_MS = 1;
const BUDGET_US = Number(process.env.MOE_ACTORS_MPI_TEST_BUDGET_US ?? 1000);

export interface WaitLabel {
  group: string;
  op: string;
  seq: number;
  rank: number;
}

interface Waiter {
  label: WaitLabel;
  resolve: () => void;
  reject: (e: Error) => void;
  spinUntil: number;
}

export type FaultNote = { source: number; message: string };

export class Poller {
  private readonly live = new Map<number, Waiter>();
  private scheduled = false;
  /** Reused request-id and completion arrays handed to progress() (grown as needed). */
  private ids = new Int32Array(8);
  private done = new Uint8Array(8);

  constructor(
    private readonly b: MpiBinding,
    private readonly onFault: (f: FaultNote) => void,
  ) {}

  /** Resolves when request `req` completes; `bytes` sizes the spin window. */
  wait(req: number, label: WaitLabel, bytes: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.live.set(req, {
        label,
        resolve,
        reject,
        spinUntil: performance.now() + SPIN_BASE_MS + (bytes / 1e6) * SPIN_MS_PER_MB,
      });
      this.schedule(true);
    });
  }

  /** What this rank is waiting in right now. */
  waiting(): WaitLabel[] {
    return [...this.live.values()].map((w) => w.label);
  }

  /** Stops polling every request and rejects its promise (the job is about to be aborted). */
  rejectAll(make: (label: WaitLabel) => Error): void {
    const ws = [...this.live.values()];
    this.live.clear();
    for (const w of ws) w.reject(make(w.label));
  }

  /** Checks the fault channel once (used by an idle timer when nothing is pending). */
  checkFaults(): void {
    const f = this.b.faultPoll();
    if (f) this.onFault(f);
  }

  private schedule(spin: boolean): void {
    if (this.scheduled) return;
    this.scheduled = true;
    if (spin) setImmediate(this.tick);
    else setTimeout(this.tick, BACKOFF_MS);
  }

  private readonly tick = (): void => {
    this.scheduled = false;
    this.checkFaults();
    if (this.live.size === 0) return;
    const now = performance.now();
    const n = this.live.size;
    if (this.ids.length < n) {
      this.ids = new Int32Array(2 * n);
      this.done = new Uint8Array(2 * n);
    }
    const all = this.ids;
    let spin = false;
    let k = 0;
    for (const [id, w] of this.live) {
      all[k++] = id;
      if (now < w.spinUntil) spin = true;
    }
    const ids = n === all.length ? all : all.subarray(0, n);
    const done = this.done;
    try {
      this.b.progress(ids, done, spin ? BUDGET_US : 0);
    } catch (e) {
      this.rejectAll(
        (l) =>
          new CollectiveError('aborted', `${l.op} #${l.seq} on group ${l.group}: ${(e as Error).message}`, {
            group: l.group,
            seq: l.seq,
            rank: l.rank,
          }),
      );
      return;
    }
    for (let i = 0; i < n; i++) {
      if (!done[i]) continue;
      const w = this.live.get(ids[i]!)!;
      this.live.delete(ids[i]!);
      w.resolve();
    }
    if (this.live.size > 0) this.schedule(spin);
  };
}
