// Waiting on another actor where a wait stays (a stage awaiting a state of the receiver, xstate's waitFor; answers to
// requests arrive as events at the asking machine instead). It ends early with the step's first error when the
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
