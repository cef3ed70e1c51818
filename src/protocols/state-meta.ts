// What every protocol state declares about itself (as XState `meta`): which actor row of the timeline it belongs
// to and its colour class. The actors layer reads it when turning transitions into trace events, so the machine
// definitions stay the single source of truth for both behaviour and presentation.

import type { StateCategory } from './events.ts';

export interface StateMeta {
  /** Timeline row: "router", "expert", "fsdp", "optimizer", "step". */
  actor: string;
  category: StateCategory;
}

/**
 * The default implementation of every invoked stage: protocols are pure, so running a machine without the
 * actors layer's implementations is a programming error, reported with the stage's name.
 */
export function notProvided(what: string) {
  return async (): Promise<never> => {
    throw new Error(
      `${what}: no implementation provided; build the machine through the actors layer (machine.provide)`,
    );
  };
}

/** The message of an invoked actor's error event (xstate.error.actor.*), for the machine's `error` context. */
export function errorText(event: unknown): string {
  const err = (event as { error?: unknown }).error;
  return err instanceof Error ? err.message : String(err);
}
