// Turns what happens on a rank into trace events: XState transitions of the protocol machines (via XState's
// inspection API: a state node entered or left, with the `meta` each protocol state declares) and collectives of
// the rank's communicators (via the CommObserver hook), attributed to the call site each collective carries.

import type { InspectionEvent } from 'xstate';
import type { CallSite, CommObserver, Communicator } from '../comm/communicator.ts';
import { nowMs, type FlightEntry } from '../comm/flight-recorder.ts';
import type { EventSink, StateCategory } from '../protocols/events.ts';
import type { StateMeta } from '../protocols/state-meta.ts';

/** What a machine instance's state events carry besides the state (from the actor that created it). */
export interface ActorLabel {
  machine: string;
  step: number;
  layer: number | null;
  microbatch: number | null;
}

interface StateNodeLike {
  id: string;
  key: string;
  meta?: Partial<StateMeta>;
}

/** Machine states with `meta` become enter/exit StateEvents. */
export class TraceBridge {
  private readonly active = new Map<unknown, Set<StateNodeLike>>();
  private readonly labels = new Map<unknown, ActorLabel>();
  /**
   * The step collectives without a call site are counted in (those issued outside the actors: checkpoints, clock
   * alignment). Written only by the rank host, at the start of each step.
   */
  step = 0;
  /** Labels of actors not labelled by their creator (children spawned inside the actor system), on first sight. */
  labeler: ((ref: { id: string }) => ActorLabel | undefined) | null = null;

  constructor(
    readonly rank: number,
    readonly sink: EventSink,
  ) {}

  /** Records which step/layer/microbatch a machine instance belongs to (its events carry them). */
  label(actorRef: unknown, label: ActorLabel): void {
    this.labels.set(actorRef, label);
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
    let label = this.labels.get(ref);
    if (!label && this.labeler) {
      label = this.labeler(ref as unknown as { id: string });
      if (label) this.labels.set(ref, label);
    }
    const t = nowMs();
    for (const n of before) if (!after.has(n)) this.emit(n, 'exit', t, label);
    for (const n of after) if (!before.has(n)) this.emit(n, 'enter', t, label);
    if (snap.status && snap.status !== 'active') {
      this.active.delete(ref);
      this.labels.delete(ref);
    } else this.active.set(ref, after);
  };

  private emit(n: StateNodeLike, phase: 'enter' | 'exit', t: number, label: ActorLabel | undefined): void {
    this.sink.record({
      kind: 'state',
      rank: this.rank,
      actor: n.meta!.actor ?? 'step',
      machine: label?.machine ?? n.id.split('.')[0]!,
      state: n.key,
      category: n.meta!.category as StateCategory,
      phase,
      t,
      step: label?.step ?? this.step,
      layer: label?.layer ?? null,
      microbatch: label?.microbatch ?? null,
    });
  }

  /**
   * A CommObserver that records every collective as start/end CollectiveEvents, attributed to the call site the
   * call carries (a call without one — outside the actors — counts as the step's, on the step row).
   */
  commObserver(): CommObserver {
    const rank = this.rank;
    const sink = this.sink;
    const record = (comm: Communicator, e: FlightEntry, phase: 'start' | 'end', site: CallSite | undefined) => {
      const b = e.dtype === 'float64' ? 8 : 4;
      sink.record({
        kind: 'collective',
        rank,
        actor: site?.actor ?? 'step',
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
        step: site?.step ?? this.step,
        layer: site?.layer ?? null,
        microbatch: site?.microbatch ?? null,
        ...(e.state === 'failed' && e.error ? { error: e.error } : {}),
      });
    };
    return {
      onStart: (comm, e, site) => record(comm, e, 'start', site),
      onEnd: (comm, e, site) => record(comm, e, 'end', site),
    };
  }
}
