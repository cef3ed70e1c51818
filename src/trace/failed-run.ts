// The failed-run panel's data: for a run that hung or failed, where each rank was stuck, and which members of
// that collective never joined it. With flight dumps the diagnosis is comm/inspect.ts's (`diagnose`), the same
// one `moe-actors inspect` prints; this module only reshapes it into per-rank statuses the timeline highlights.
// Without dumps it falls back to the trace itself: collectives that some members started and others never did.

import type { FlightDump } from '../comm/flight-recorder.ts';
import { diagnose } from '../comm/inspect.ts';
import type { TraceModel } from './model.ts';
import { matchKey } from './model.ts';

export type RankStatus = 'waiting' | 'missing' | 'failed' | 'ok' | 'no-dump';

export interface RankView {
  rank: number;
  status: RankStatus;
  /** "in all_to_all_v #20 on group ep (layer 2 forward dispatch) for 60 ms" or "never joined …". */
  where: string;
  /** Dump reason, if any. */
  reason: string | null;
  /** Last event time in the trace (ms, run clock), if the trace has the rank. */
  lastEventT: number | null;
}

export interface StuckCollective {
  key: string;
  op: string;
  group: string;
  groupRanks: readonly number[];
  seq: number;
  tag: string | null;
  /** Ranks that issued it and waited (pending or timed out). */
  waiting: number[];
  /** Members that never issued it (or left no dump): the ranks everyone waits for. */
  missing: number[];
}

export interface FailedRunView {
  source: 'flight-dumps' | 'trace';
  ranks: RankView[];
  stuck: StuckCollective[];
  /** The diagnosis as text (comm/inspect's, with dumps). */
  text: string;
}

export function fromFlightDumps(dumps: readonly FlightDump[], model?: TraceModel): FailedRunView {
  const dx = diagnose(dumps);
  const byRank = new Map(dumps.map((d) => [d.rank, d]));
  const stuck: StuckCollective[] = [];
  for (const f of dx.findings) {
    if (f.kind !== 'missing') continue;
    const sample = f.joined
      .map((r) => byRank.get(r)?.entries.find((e) => e.group === f.group && e.seq === f.seq))
      .find((e) => e);
    stuck.push({
      key: matchKey(f.group, f.groupRanks, f.seq),
      op: f.op,
      group: f.group,
      groupRanks: f.groupRanks,
      seq: f.seq,
      tag: sample?.tag ?? null,
      waiting: f.joined,
      missing: [...f.missing],
    });
  }
  const ranks: RankView[] = [];
  for (let r = 0; r < dx.worldSize; r++) {
    const d = byRank.get(r);
    const miss = stuck.find((s) => s.missing.includes(r));
    const pos = dx.positions.find((p) => p.rank === r)?.where ?? '';
    // The call this rank could not get past (its oldest that did not complete).
    const blocked = d?.entries.filter((e) => e.state !== 'completed').sort((a, b) => a.id - b.id)[0];
    let status: RankStatus;
    let where: string;
    if (miss) {
      status = 'missing';
      where = `never joined ${miss.op} #${miss.seq} on group ${miss.group}${miss.tag ? ` (${miss.tag})` : ''}; ${listRanks(miss.waiting)} waited for it${d ? '' : ' (no flight dump)'}`;
    } else if (!d) {
      status = 'no-dump';
      where = pos || 'left no flight dump';
    } else if (blocked) {
      status = blocked.state === 'failed' ? 'failed' : 'waiting';
      const waited = (blocked.tCompleted ?? d.tDump) - (blocked.tStarted ?? blocked.tCreated);
      where = `in ${blocked.op} #${blocked.seq} on group ${blocked.group}${blocked.tag ? ` (${blocked.tag})` : ''} for ${waited.toFixed(0)} ms${blocked.error ? `: ${blocked.error}` : ''}`;
    } else {
      status = 'ok';
      where = pos || 'not in a collective';
    }
    ranks.push({ rank: r, status, where, reason: d?.reason ?? null, lastEventT: model?.lastEventT.get(r) ?? null });
  }
  return { source: 'flight-dumps', ranks, stuck, text: dx.text };
}

/** Without dumps: collectives of the trace that some members started and others never did. */
export function fromTrace(model: TraceModel): FailedRunView | null {
  const stuck: StuckCollective[] = [];
  for (const m of model.matches) {
    if (m.missing.length === 0) continue;
    const spans = m.spans.map((i) => model.collectives[i]!);
    if (!spans.some((c) => c.unfinished || c.error)) continue; // the trace merely ends before the others issued it
    stuck.push({
      key: m.key,
      op: m.op,
      group: m.group,
      groupRanks: m.groupRanks,
      seq: m.seq,
      tag: spans[0]?.tag ?? null,
      waiting: spans.map((c) => c.rank),
      missing: m.missing,
    });
  }
  if (stuck.length === 0) return null;
  const ranks: RankView[] = model.ranks.map((r) => {
    const miss = stuck.find((s) => s.missing.includes(r));
    const wait = stuck.find((s) => s.waiting.includes(r));
    return {
      rank: r,
      status: miss ? 'missing' : wait ? 'waiting' : 'ok',
      where: miss
        ? `never joined ${miss.op} #${miss.seq} on group ${miss.group}; ${listRanks(miss.waiting)} waited for it`
        : wait
          ? `in ${wait.op} #${wait.seq} on group ${wait.group}`
          : 'no stuck collective',
      reason: null,
      lastEventT: model.lastEventT.get(r) ?? null,
    };
  });
  return { source: 'trace', ranks, stuck, text: plainText(stuck) };
}

function listRanks(rs: readonly number[]): string {
  return `${rs.length === 1 ? 'rank' : 'ranks'} ${[...rs].sort((a, b) => a - b).join(',')}`;
}

function plainText(stuck: readonly StuckCollective[]): string {
  return stuck
    .map((s) =>
      s.missing.length > 0
        ? `Not all ranks joined ${s.op} #${s.seq} on group ${s.group}: missing ${listRanks(s.missing)}; ${listRanks(s.waiting)} waited.`
        : `${listRanks(s.waiting)} failed in ${s.op} #${s.seq} on group ${s.group}.`,
    )
    .join(' ');
}

/** The panel's data for a run, or null when nothing failed. */
export function failedRunView(model: TraceModel, dumps: readonly FlightDump[]): FailedRunView | null {
  if (dumps.length > 0) return fromFlightDumps(dumps, model);
  return fromTrace(model);
}
