// Errors of the communication layer. Every one names the group, the call (op + sequence number) and, where the
// transport can tell, who was waiting for whom, so that a failed run explains itself.

import type { CollectiveOp } from './communicator.ts';

export type CollectiveErrorKind =
  | 'timeout' // the call did not complete within its timeout
  | 'peer-dead' // a member of the group died (inproc fault injection, worker exit, MPI abort)
  | 'mismatch' // members called different ops or sizes at the same sequence number
  | 'unsupported' // the backend/profile lacks the op; raised before anything is sent
  | 'invalid' // bad arguments (lengths, counts), raised before anything is sent
  | 'aborted' // the rank was stopped
  | 'freed'; // the communicator was freed

export class CollectiveError extends Error {
  constructor(
    readonly kind: CollectiveErrorKind,
    message: string,
    /** `rank` is the world rank of the rank that raised it; `report` the cross-rank diagnosis, when there is one. */
    readonly detail: { group?: string; op?: CollectiveOp; seq?: number; rank?: number; report?: string } = {},
  ) {
    super(message);
    this.name = 'CollectiveError';
  }
}

/** A failed rank's error for the launcher: a CollectiveError's kind says which collective went wrong; anything else needs its stack to be found. */
export function rankErrorText(e: unknown): string {
  if (e instanceof CollectiveError) return `CollectiveError[${e.kind}]: ${e.message}`;
  if (e instanceof Error) return e.stack ?? `${e.name}: ${e.message}`;
  return String(e);
}
