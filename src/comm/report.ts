// Sentences about where ranks are, shared by the live inproc diagnosis and the post-mortem `inspect`, so a hang
// reads the same whichever saw it: "rank 2 is in all_gather #57 on group ep, ranks 0,1,3 in reduce_scatter #58 on
// group fsdp". Ranks are world ranks.

import type { FlightEntry } from './flight-recorder.ts';

export function rankList(ranks: readonly number[]): string {
  return `${ranks.length === 1 ? 'rank' : 'ranks'} ${[...ranks].sort((a, b) => a - b).join(',')}`;
}

/** "all_gather #57 on group ep" */
export function place(e: Pick<FlightEntry, 'op' | 'seq' | 'group'>): string {
  return `${e.op} #${e.seq} on group ${e.group}`;
}

/** Where one rank is: `where` reads after "is", e.g. "in all_gather #57 on group ep" or "dead (killed …)". */
export interface Position {
  rank: number;
  where: string;
}

/**
 * Ranks grouped by `value`, the smallest group first (the odd one out leads the sentence), ties by the lowest rank,
 * then by first appearance (stable sort).
 */
export function rankClasses<T>(
  items: readonly T[],
  rank: (x: T) => number,
  value: (x: T) => string,
): { value: string; ranks: number[] }[] {
  const by = new Map<string, number[]>();
  for (const x of items) {
    const v = value(x);
    const l = by.get(v);
    if (l) l.push(rank(x));
    else by.set(v, [rank(x)]);
  }
  return [...by.entries()]
    .map(([value, ranks]) => ({ value, ranks }))
    .sort((a, b) => a.ranks.length - b.ranks.length || Math.min(...a.ranks) - Math.min(...b.ranks));
}

/** Ranks grouped by position, in rankClasses' order: "rank 2 is in all_gather #57 on group ep, ranks 0,1,3 in reduce_scatter #58 on group fsdp". */
export function describePositions(positions: readonly Position[]): string {
  return rankClasses(
    positions,
    (p) => p.rank,
    (p) => p.where,
  )
    .map(({ value: where, ranks }, i) => {
      const verb = ranks.length === 1 ? 'is' : 'are';
      // After the first clause "in …" needs no verb; other states keep it so the sentence still parses.
      return `${rankList(ranks)} ${i > 0 && where.startsWith('in ') ? '' : `${verb} `}${where}`;
    })
    .join(', ');
}

/** The oldest call of `entries` that is neither completed nor failed: what the rank waits in first. */
export function oldestPending(entries: readonly FlightEntry[]): FlightEntry | undefined {
  let best: FlightEntry | undefined;
  for (const e of entries) {
    if ((e.state === 'scheduled' || e.state === 'started') && (!best || e.id < best.id)) best = e;
  }
  return best;
}
