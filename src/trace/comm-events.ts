// Collectives → CollectiveEvents. The communicator reports every call to an optional CommObserver (base-
// communicator.ts) with its flight-recorder entry; this adapter turns those callbacks into trace events, so the
// actors layer only has to say which actor issued the call and for which step/layer/microbatch.

import type { CommObserver } from '../comm/base-communicator.ts';
import type { Communicator } from '../comm/communicator.ts';
import type { FlightEntry } from '../comm/flight-recorder.ts';
import type { CollectiveEvent, EventSink } from '../protocols/events.ts';

export interface CallContext {
  actor: string;
  step: number;
  layer: number | null;
  microbatch: number | null;
}

const BYTES: Record<FlightEntry['dtype'], number> = { float32: 4, float64: 8, int32: 4 };

/**
 * A CommObserver that records a 'start' and an 'end' CollectiveEvent per call. `context()` is read at the call's
 * start (the issuing actor's current step/layer/microbatch); the end reuses it. Times are the flight recorder's.
 * Bytes are elements × dtype size (a broadcast's non-root sends nothing; it is counted like the root).
 */
export function collectiveObserver(sink: EventSink, context: () => CallContext): CommObserver {
  const open = new WeakMap<FlightEntry, Omit<CollectiveEvent, 'phase' | 't' | 'error'>>();
  return {
    onStart(comm: Communicator, entry: FlightEntry) {
      const c = context();
      const bpe = BYTES[entry.dtype];
      const base: Omit<CollectiveEvent, 'phase' | 't' | 'error'> = {
        kind: 'collective',
        rank: comm.ranks[comm.rank]!,
        actor: c.actor,
        op: entry.op,
        group: entry.group,
        groupRanks: entry.groupRanks,
        seq: entry.seq,
        dtype: entry.dtype,
        inNelems: entry.inNelems,
        outNelems: entry.outNelems,
        bytesSent: entry.inNelems * bpe,
        bytesReceived: entry.outNelems * bpe,
        tag: entry.tag,
        step: c.step,
        layer: c.layer,
        microbatch: c.microbatch,
      };
      open.set(entry, base);
      sink.record({ ...base, phase: 'start', t: entry.tStarted ?? entry.tCreated });
    },
    onEnd(_comm: Communicator, entry: FlightEntry) {
      const base = open.get(entry);
      if (!base) return;
      open.delete(entry);
      const end: CollectiveEvent = { ...base, phase: 'end', t: entry.tCompleted ?? entry.tCreated };
      if (entry.state === 'failed') end.error = entry.error ?? 'failed';
      sink.record(end);
    },
  };
}
