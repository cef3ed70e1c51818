// Model-based coverage of protocol machines with xstate/graph: enumerate paths to every reachable state, replay
// each on a live actor whose stages never settle on their own (the path's done/error events drive it), record
// every transition taken (including eventless ones) through XState's inspection API, and compare with the
// transitions the machine defines.
import { createActor, fromPromise, type AnyStateMachine } from 'xstate';
import { getAdjacencyMap, getShortestPaths } from 'xstate/graph';

type AnyNode = {
  id: string;
  states: Record<string, AnyNode>;
  transitions: Map<string, Array<{ target?: AnyNode[]; source: AnyNode; eventType: string }>>;
  always?: Array<{ target?: AnyNode[]; source: AnyNode; eventType: string }>;
};

export function transitionKey(t: {
  source: { id: string };
  eventType: string;
  target?: { id: string }[] | undefined;
}): string {
  const target = t.target ? t.target.map((n) => n.id).join('+') : '(internal)';
  return `${t.source.id} --${t.eventType || 'always'}--> ${target}`;
}

/** Every transition the machine defines, keyed like `transitionKey`. */
export function definedTransitions(machine: AnyStateMachine): Set<string> {
  const out = new Set<string>();
  const walk = (node: AnyNode) => {
    for (const defs of node.transitions.values()) for (const d of defs) out.add(transitionKey(d));
    for (const d of node.always ?? []) out.add(transitionKey(d));
    for (const child of Object.values(node.states)) walk(child);
  };
  walk(machine.root as unknown as AnyNode);
  return out;
}

export function allStateIds(machine: AnyStateMachine): Set<string> {
  const out = new Set<string>();
  const walk = (node: AnyNode) => {
    out.add(node.id);
    for (const child of Object.values(node.states)) walk(child);
  };
  walk(machine.root as unknown as AnyNode);
  return out;
}

export interface Coverage {
  transitions: Set<string>;
  states: Set<string>;
  paths: number;
}

/**
 * Transition coverage: for every reachable state (under `serialize`) and every event enabled there, replays the
 * shortest path to that state plus that event on a live actor. `stageNames` are the invoked actor sources; they
 * are replaced by promises that never settle, so only the path's events move the machine. `check` runs after
 * every step with the live snapshot.
 */
export function coverPaths(
  machine: AnyStateMachine,
  input: unknown,
  stageNames: readonly string[],
  events: (snapshot: any) => any[],
  opts: { serialize: (s: any) => string; check?: (s: any) => void },
): Coverage {
  const never = fromPromise(() => new Promise<void>(() => {}));
  const provided = machine.provide({ actors: Object.fromEntries(stageNames.map((n) => [n, never])) } as any);
  const traversal = {
    input,
    events,
    serializeState: opts.serialize,
    filterEvents: (s: any, e: any) => s.can(e),
  } as any;
  const shortest = new Map(getShortestPaths(provided, traversal).map((p: any) => [opts.serialize(p.state), p]));
  const adjacency = getAdjacencyMap(provided, traversal) as unknown as Record<
    string,
    { transitions: Record<string, { event: any }> }
  >;
  const cov: Coverage = { transitions: new Set(), states: new Set(), paths: 0 };
  for (const [key, entry] of Object.entries(adjacency)) {
    const head = shortest.get(key);
    if (!head) continue;
    const tails = Object.values(entry.transitions).map((t) => t.event);
    for (const tail of tails.length ? tails : [null]) {
      cov.paths++;
      const actor = createActor(provided, {
        input,
        inspect: (ev: any) => {
          if (ev.type === '@xstate.microstep' && ev.actorRef === actor) {
            for (const t of ev._transitions) cov.transitions.add(transitionKey(t));
            for (const n of ev.snapshot._nodes ?? []) cov.states.add(n.id);
          }
        },
      });
      actor.start();
      for (const n of actor.getSnapshot()._nodes) cov.states.add(n.id);
      for (const step of head.steps) {
        if (step.event.type === 'xstate.init') continue;
        actor.send(step.event);
        const snap = actor.getSnapshot();
        if (opts.serialize(snap) !== opts.serialize(step.state)) {
          throw new Error(
            `replay diverged after ${step.event.type}: live ${opts.serialize(snap)} vs path ${opts.serialize(step.state)}`,
          );
        }
        opts.check?.(snap);
      }
      if (tail) {
        actor.send(tail);
        opts.check?.(actor.getSnapshot());
      }
      actor.stop();
    }
  }
  return cov;
}

export function doneEvents(ids: readonly string[]): any[] {
  return ids.flatMap((id) => [
    { type: `xstate.done.actor.${id}`, output: undefined, actorId: id },
    { type: `xstate.error.actor.${id}`, error: new Error(`injected failure in ${id}`), actorId: id },
  ]);
}
