// Turns what happens on a rank into trace events: XState transitions of the protocol machines (via XState's
// inspection API: a state node entered or left, with the `meta` each protocol state declares) and collectives of
// the rank's communicators (via the CommObserver hook), stamped with the rank's current step/layer/microbatch.

import type { InspectionEvent } from 'xstate';
import type { CommObserver, Communicator } from '../comm/communicator.ts';
import { nowMs, type FlightEntry } from '../comm/flight-recorder.ts';
import type { EventSink, StateCategory } from '../protocols/events.ts';
import type { StateMeta } from '../protocols/state-meta.ts';

/** Where a rank is in its step; actors update it, events read it. */
export interface RankPosition {
  step: number;
  layer: number | null;
  microbatch: number | null;
  /** Timeline row of the collective currently issued (set by the stage that issues it). */
  actor: string;
}

interface StateNodeLike {
  id: string;
  key: string;
  meta?: Partial<StateMeta>;
}

/** Machine states with `meta` become enter/exit StateEvents. */
export class TraceBridge {
  private readonly active = new Map<unknown, Set<StateNodeLike>>();
  private readonly labels = new Map<unknown, { machine: string; layer: number | null; microbatch: number | null }>();

  constructor(
    readonly rank: number,
    readonly sink: EventSink,
    readonly position: RankPosition,
  ) {}

  /** Records which layer/microbatch a machine instance belongs to (its events carry them). */
  label(actorRef: unknown, machine: string, layer: number | null, microbatch: number | null): void {
    this.labels.set(actorRef, { machine, layer, microbatch });
  }

  /** Pass as `inspect` to createActor. */
  readonly inspect = (ev: InspectionEvent): void => {
    if (ev.type !== '@xstate.microstep' && ev.type !== '@xstate.snapshot') return;
    const snap = ev.snapshot as { _nodes?: StateNodeLike[]; status?: string };
    const nodes = snap._nodes;
    if (!nodes) return;
    const ref = ev.actorRef;
    const before = this.active.get(ref) ?? new Set<StateNodeLike>();
    const after = new Set(nodes.filter((n) => n.meta?.category));
    if (before.size === after.size && [...after].every((n) => before.has(n))) return;
    const label = this.labels.get(ref);
    const t = nowMs();
    for (const n of before) if (!after.has(n)) this.emit(n, 'exit', t, label);
    for (const n of after) if (!before.has(n)) this.emit(n, 'enter', t, label);
    if (snap.status && snap.status !== 'active') {
      this.active.delete(ref);
      this.labels.delete(ref);
    } else this.active.set(ref, after);
  };

  private emit(n: StateNodeLike, phase: 'enter' | 'exit', t: number, label: { machine: string; layer: number | null; microbatch: number | null } | undefined): void {
    this.sink.record({
      kind: 'state',
      rank: this.rank,
      actor: n.meta!.actor ?? 'step',
      machine: label?.machine ?? n.id.split('.')[0]!,
      state: n.key,
      category: n.meta!.category as StateCategory,
      phase,
      t,
      step: this.position.step,
      layer: label ? label.layer : this.position.layer,
      microbatch: label ? label.microbatch : this.position.microbatch,
    });
  }

  /**
   * A CommObserver that records every collective as start/end CollectiveEvents. The position (actor row, step,
   * layer, microbatch) is captured when the call is issued: by the time it completes, the rank may have moved on
   * (an FSDP reduction of layer 3 finishing during layer 2's backward).
   */
  commObserver(): CommObserver {
    const rank = this.rank;
    const sink = this.sink;
    const pos = this.position;
    const issued = new Map<FlightEntry, RankPosition>();
    const record = (comm: Communicator, e: FlightEntry, phase: 'start' | 'end') => {
      let at: RankPosition;
      if (phase === 'start') {
        at = { ...pos };
        issued.set(e, at);
      } else {
        at = issued.get(e) ?? { ...pos };
        issued.delete(e);
      }
      const b = e.dtype === 'float64' ? 8 : 4;
      sink.record({
        kind: 'collective',
        rank,
        actor: at.actor,
        op: e.op,
        group: e.group,
        groupRanks: comm.ranks,
        seq: e.seq,
        phase,
        t: phase === 'start' ? (e.tStarted ?? nowMs()) : (e.tCompleted ?? nowMs()),
        dtype: e.dtype,
        inNelems: e.inNelems,
        outNelems: e.outNelems,
        bytesSent: e.inNelems * b,
        bytesReceived: e.outNelems * b,
        tag: e.tag,
        step: at.step,
        layer: at.layer,
        microbatch: at.microbatch,
        ...(e.state === 'failed' && e.error ? { error: e.error } : {}),
      });
    };
    return {
      onStart: (comm, e) => record(comm, e, 'start'),
      onEnd: (comm, e) => record(comm, e, 'end'),
    };
  }
}
