// Do the calls that members of a group made at one sequence number describe the same collective? Used live by the
// inproc transport (which sees every arrival) and post mortem by `inspect` (which sees flight dumps), so both
// phrase a mismatch the same way: "rank 3 called reduce_scatter #12 on group fsdp with 1024 elements, ranks 0,1,2
// with 1000". Ranks are world ranks.

import { sum } from './counts.ts';
import type { FlightEntry } from './flight-recorder.ts';
import { rankClasses, rankList } from './report.ts';

export interface MemberCall {
  /** World rank. */
  rank: number;
  entry: Pick<
    FlightEntry,
    | 'op'
    | 'seq'
    | 'group'
    | 'groupRanks'
    | 'dtype'
    | 'reduceOp'
    | 'inNelems'
    | 'outNelems'
    | 'inSplits'
    | 'outSplits'
    | 'root'
  >;
}

/** Members split into classes by `attr` (report.ts's order); null when every member agrees. */
function classes(
  members: readonly MemberCall[],
  attr: (m: MemberCall) => string,
): { value: string; ranks: number[] }[] | null {
  const cls = rankClasses(members, (m) => m.rank, attr);
  return cls.length <= 1 ? null : cls;
}

/** "rank 3 called reduce_scatter #12 on group fsdp with 1024 elements, ranks 0,1,2 with 1000". */
function sentence(
  members: readonly MemberCall[],
  attr: (m: MemberCall) => string,
  lead: string,
  fmt: (v: string) => string,
): string | null {
  const cls = classes(members, attr);
  if (!cls) return null;
  const e = members[0]!.entry;
  const [first, ...rest] = cls;
  return (
    `${rankList(first!.ranks)} called ${lead === 'op' ? first!.value : e.op} #${e.seq} on group ${e.group}${lead === 'op' ? '' : ` ${fmt(first!.value)}`}, ` +
    rest.map((c) => `${rankList(c.ranks)} ${lead === 'op' ? `called ${c.value} #${e.seq}` : fmt(c.value)}`).join(', ')
  );
}

const list = (xs: readonly number[] | undefined) => `[${(xs ?? []).join(',')}]`;

/**
 * Null when the calls agree; otherwise one sentence naming who differs and how. Checks, in order: op, dtype,
 * reduction, root, then the sizes that must agree for that op (all_to_all_v: what i sends to j is what j expects
 * from i).
 */
export function describeMismatch(members: readonly MemberCall[]): string | null {
  if (members.length < 2) return selfInconsistent(members[0]);
  const op = sentence(
    members,
    (m) => m.entry.op,
    'op',
    (v) => v,
  );
  if (op) return op;
  const dtype = sentence(
    members,
    (m) => m.entry.dtype,
    'dtype',
    (v) => `with ${v}`,
  );
  if (dtype) return dtype;
  const red = sentence(
    members,
    (m) => m.entry.reduceOp ?? 'none',
    'reduce',
    (v) => `with op ${v}`,
  );
  if (red) return red;
  const e = members[0]!.entry;
  switch (e.op) {
    case 'broadcast': {
      const root = sentence(
        members,
        (m) => String(m.entry.root ?? '?'),
        'root',
        (v) => `with root ${v}`,
      );
      if (root) return root;
      return sentence(
        members,
        (m) => String(m.entry.inNelems),
        'n',
        (v) => `with ${v} elements`,
      );
    }
    case 'all_gather':
    case 'reduce_scatter':
    case 'all_reduce':
      return sentence(
        members,
        (m) => String(m.entry.inNelems),
        'n',
        (v) => `with ${v} elements`,
      );
    case 'all_gather_v': {
      const counts = sentence(
        members,
        (m) => list(m.entry.inSplits),
        'counts',
        (v) => `with counts ${v}`,
      );
      if (counts) return counts;
      for (const m of members) {
        const bad = selfInconsistent(m);
        if (bad) return bad;
      }
      return null;
    }
    case 'all_to_all_v': {
      for (const m of members) {
        const bad = selfInconsistent(m);
        if (bad) return bad;
      }
      const byRank = new Map(members.map((m) => [m.rank, m.entry] as const));
      const gr = e.groupRanks;
      for (const m of members) {
        const i = gr.indexOf(m.rank);
        for (let j = 0; j < gr.length; j++) {
          const peer = byRank.get(gr[j]!);
          if (!peer) continue;
          const sends = m.entry.inSplits?.[j];
          const expects = peer.outSplits?.[i];
          if (sends !== expects) {
            return `rank ${m.rank} sends ${sends} elements to rank ${gr[j]} in all_to_all_v #${e.seq} on group ${e.group}, but rank ${gr[j]} expects ${expects} from rank ${m.rank}`;
          }
        }
      }
      return null;
    }
    case 'barrier':
      return null;
  }
}

/** A call whose own sizes disagree with its splits (only a corrupted record or an injected fault does that). */
function selfInconsistent(m: MemberCall | undefined): string | null {
  if (!m) return null;
  const e = m.entry;
  if (e.op === 'all_gather_v' && e.inSplits) {
    const i = e.groupRanks.indexOf(m.rank);
    if (e.inSplits[i] !== e.inNelems) {
      return `rank ${m.rank} called all_gather_v #${e.seq} on group ${e.group} with ${e.inNelems} elements, but its counts say ${e.inSplits[i]}`;
    }
  }
  if (e.op === 'all_to_all_v' && e.inSplits && sum(e.inSplits) !== e.inNelems) {
    return `rank ${m.rank} called all_to_all_v #${e.seq} on group ${e.group} with ${e.inNelems} elements, but its send counts sum to ${sum(e.inSplits)}`;
  }
  return null;
}
