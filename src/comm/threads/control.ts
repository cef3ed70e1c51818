// The control surface of one rank, served by the rank's worker over a MessagePort with comlink, so the launcher
// (or a CLI, or a test) can ask a running rank what it is doing, take its flight dump and stop it — also while
// the rank waits in a collective, because waits yield to the event loop (wait.ts).

import type { FlightDump } from '../flight-recorder.ts';
import type { LifeState } from './life.ts';
import type { RankRuntime } from './runtime.ts';

export interface PendingStatus {
  group: string;
  op: string;
  seq: number;
  phase: number;
  /** World ranks this rank is waiting for right now. */
  waitingFor: number[];
}

export interface RankStatus {
  rank: number;
  life: LifeState;
  /** The collectives this rank is inside right now (one per group at most). */
  pending: PendingStatus[];
  /** Newest flight entry that has not completed, if any (also covers calls queued behind another on a group). */
  oldestPending: { group: string; op: string; seq: number; ageMs: number } | null;
  stopReason: string | null;
}

export interface RankControl {
  status(): RankStatus;
  dump(reason?: string): FlightDump;
  stop(reason?: string): void;
}

export function rankControl(rt: RankRuntime): RankControl {
  return {
    status(): RankStatus {
      const pending: PendingStatus[] = [];
      for (const m of rt.members) {
        const w = m.currentWait();
        if (w) pending.push(w);
      }
      const p = rt.recorder.pending();
      return {
        rank: rt.worldRank,
        life: rt.life.get(rt.worldRank),
        pending,
        oldestPending: p
          ? {
              group: p.group,
              op: p.op,
              seq: p.seq,
              ageMs: Math.round(performance.timeOrigin + performance.now() - p.tCreated),
            }
          : null,
        stopReason: rt.stopReason,
      };
    },
    dump(reason = 'on demand'): FlightDump {
      return rt.recorder.dump(reason);
    },
    stop(reason = 'stopped by the launcher'): void {
      rt.stop(reason);
    },
  };
}
