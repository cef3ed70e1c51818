// Which injected fault (launch.ts `Fault`) applies to a rank's call, and how a mismatch fault rewrites what the
// rank claims to call. A mismatch is applied to the flight entry — the record the other ranks are compared with
// and that lands in dumps — so the live check and a post-mortem `inspect` see the same disagreement.

import type { CallSpec } from '../base-communicator.ts';
import type { CollectiveOp } from '../communicator.ts';
import type { Fault } from '../launch.ts';

export function validateFaults(faults: readonly Fault[], size: number): void {
  for (const f of faults) {
    if (!Number.isInteger(f.rank) || f.rank < 0 || f.rank >= size) {
      throw new Error(`fault ${JSON.stringify(f)}: rank ${f.rank} is not a rank of a world of ${size}`);
    }
    if (f.kind === 'delay' && !(f.ms >= 0)) throw new Error(`fault ${JSON.stringify(f)}: ms must be ≥ 0`);
    if (f.kind !== 'delay' && !(Number.isInteger(f.atSeq) && f.atSeq >= 1)) {
      throw new Error(`fault ${JSON.stringify(f)}: atSeq must be a collective sequence number ≥ 1`);
    }
    if (f.kind === 'delay' && f.atSeq !== undefined && !(Number.isInteger(f.atSeq) && f.atSeq >= 1)) {
      throw new Error(`fault ${JSON.stringify(f)}: atSeq must be a collective sequence number ≥ 1`);
    }
  }
}

export class FaultPlan {
  /** Indices of faults that took effect at least once, and every group a call was made on. */
  private readonly fired = new Set<number>();
  private readonly groupsSeen = new Set<string>();

  constructor(private readonly faults: readonly Fault[]) {}

  /** The kill / mismatch fault for this call, if any. A fault's group defaults to "world". Called for every call. */
  at(rank: number, group: string, seq: number): Exclude<Fault, { kind: 'delay' }> | undefined {
    this.groupsSeen.add(group);
    for (const [i, f] of this.faults.entries()) {
      if (f.kind !== 'delay' && f.rank === rank && f.atSeq === seq && (f.group ?? 'world') === group) {
        this.fired.add(i);
        return f;
      }
    }
    return undefined;
  }

  /**
   * Faults that never took effect, each with why: a fault on a group that does not exist (a typo) or at a sequence
   * number the rank never reached would otherwise leave a run that looks as if the fault were harmless.
   */
  unapplied(): string[] {
    const groups = [...this.groupsSeen].sort().join(', ');
    return this.faults.flatMap((f, i) => {
      if (this.fired.has(i)) return [];
      const g = f.group ?? (f.kind === 'delay' && f.atSeq === undefined ? undefined : 'world');
      const where =
        g === undefined
          ? 'collective at all'
          : f.atSeq === undefined
            ? `collective on group ${g}`
            : `collective #${f.atSeq} on group ${g}`;
      const known =
        g === undefined || this.groupsSeen.has(g)
          ? ''
          : ` (no call was made on a group ${g}; groups used before the run ended: ${groups})`;
      return [`${JSON.stringify(f)} never applied: rank ${f.rank} issued no ${where}${known}`];
    });
  }

  /**
   * Total delay of this arrival. A delay without group and atSeq applies to every collective; with atSeq alone it
   * means #atSeq on "world"; with a group alone, every collective of that group.
   */
  delay(rank: number, group: string, seq: number): number {
    let ms = 0;
    for (const [i, f] of this.faults.entries()) {
      if (f.kind !== 'delay' || f.rank !== rank) continue;
      const g = f.group ?? (f.atSeq !== undefined ? 'world' : undefined);
      if (g !== undefined && g !== group) continue;
      if (f.atSeq !== undefined && f.atSeq !== seq) continue;
      this.fired.add(i);
      ms += f.ms;
    }
    return ms;
  }
}

/** A different op for the 'mismatch-op' fault (deterministic, so a replay shows the same report). */
export function otherOp(op: CollectiveOp): CollectiveOp {
  return op === 'all_reduce' ? 'all_gather' : 'all_reduce';
}

/**
 * Applies a mismatch fault to the call's flight entry (what the rank claims to call). For v-collectives the size
 * lives in the splits: all_gather_v skews this rank's own count, all_to_all_v what it sends to group rank 0.
 */
export function applyMismatch(
  call: CallSpec,
  fault: Exclude<Fault, { kind: 'delay' | 'kill' }>,
  groupRank: number,
): void {
  const e = call.entry;
  if (fault.kind === 'mismatch-op') {
    e.op = otherOp(call.op);
    return;
  }
  e.inNelems += fault.delta;
  if (e.inSplits && e.inSplits.length > 0) {
    const splits = [...e.inSplits];
    const i = call.op === 'all_gather_v' ? groupRank : 0;
    splits[i] = splits[i]! + fault.delta;
    e.inSplits = splits;
  }
}
