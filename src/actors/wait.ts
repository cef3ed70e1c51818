// Waiting on another actor where a wait stays (a stage awaiting a state of the receiver, xstate's waitFor; answers to
// requests arrive as events at the asking machine instead). It ends early with the step's first error when the
// machine fails, so the caller rethrows the original (a CollectiveError naming the collective), not a message.

import { createActor, fromCallback, waitFor, type AnyActorRef, type EventObject, type SnapshotFrom } from 'xstate';

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

/** What an asker names in a timeout: who waits, and for whom / which answer. */
export interface AskParties {
  who: string;
  whom: string;
  /** No answer after this long fails the wait with both names (unset: the step watchdog bounds it). */
  timeoutMs?: number;
}

/**
 * Sends a request through `send(replyTo)` and resolves with the answer of type `done`; an answer of type `failed`
 * rejects with the step's first error (else the answer's own `error`). The reply address is a one-shot inbox actor:
 * a promise stage cannot receive events itself, so the answer arrives at the inbox and settles the stage.
 */
export function ask<E extends EventObject>(
  send: (replyTo: AnyActorRef) => void,
  done: string,
  failed: string,
  failure: StepFailure,
  parties: AskParties,
): Promise<E> {
  return new Promise<E>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const inbox = createActor(
      fromCallback<EventObject>(({ receive }) => {
        receive((e) => {
          if (e.type !== done && e.type !== failed) return;
          clearTimeout(timer);
          queueMicrotask(() => inbox.stop());
          if (e.type === done) resolve(e as E);
          else reject(failure.first ?? new Error((e as { error?: string }).error ?? `${parties.whom} failed`));
        });
      }),
    ).start();
    if (parties.timeoutMs !== undefined && parties.timeoutMs > 0)
      timer = setTimeout(() => {
        inbox.stop();
        reject(new Error(`${parties.who} waited ${parties.timeoutMs} ms for ${parties.whom}: no answer`));
      }, parties.timeoutMs);
    try {
      send(inbox);
    } catch (e) {
      clearTimeout(timer);
      inbox.stop();
      reject(e);
    }
  });
}
