// The call site a stage hands to the collectives it issues: which actor (timeline row), machine and state issued
// it, and where in the step. Built from the stage's own input, so concurrent stages never share one.

import type { CallSite } from '../comm/communicator.ts';

export function siteOf(
  actor: string,
  machine: string,
  at: { state: string; step: number; layer?: number | null; microbatch?: number | null },
): CallSite {
  return { actor, machine, state: at.state, step: at.step, layer: at.layer ?? null, microbatch: at.microbatch ?? null };
}
