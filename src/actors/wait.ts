// Waiting on another actor, the two ways actors of a rank wait: for a machine to reach a state (xstate's waitFor)
// or for an actor's answer to a request (an emitted event). Both end early with the step's first error when a
// machine fails, so the caller rethrows the original (a CollectiveError naming the collective), not a message.

import { waitFor, type AnyActorRef, type SnapshotFrom } from 'xstate';

/** The first error a stage of the step threw; machines keep only its message. */
export interface StepFailure {
  first: unknown;
}

const failedState = (s: { value?: unknown; status?: string }) => s.value === 'failed';

/** Waits until the machine satisfies `done`; rejects with the step's first error once the machine has failed. */
export async function until<A extends AnyActorRef>(
  actor: A,
  done: (s: SnapshotFrom<A>) => boolean,
  failure: StepFailure,
): Promise<SnapshotFrom<A>> {
  const s = await waitFor(actor, (x) => failedState(x as never) || done(x));
  if (failedState(s as never))
    throw (
      failure.first ?? new Error((s as { context?: { error?: string } }).context?.error ?? 'protocol machine failed')
    );
  return s;
}

/**
 * Sends `event` to `actor` and resolves with the first emitted event of type `answer` that `matches`; rejects with
 * the step's first error when the actor emits `failedType` instead.
 */
export function request<E extends { type: string }>(
  actor: AnyActorRef,
  event: { type: string; [k: string]: unknown },
  answer: E['type'],
  failedType: string,
  failure: StepFailure,
  matches: (e: E) => boolean = () => true,
): Promise<E> {
  return new Promise<E>((resolve, reject) => {
    const subs: { unsubscribe(): void }[] = [];
    const end = () => subs.forEach((s) => s.unsubscribe());
    subs.push(
      actor.on(answer, (e: E) => {
        if (!matches(e)) return;
        end();
        resolve(e);
      }),
      actor.on(failedType, (e: { error?: string }) => {
        end();
        reject(failure.first ?? new Error(e.error ?? `${actor.id} failed`));
      }),
    );
    actor.send(event);
  });
}
