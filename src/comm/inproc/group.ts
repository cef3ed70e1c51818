// One group of the inproc transport, shared by its members' communicators: the calls waiting at each sequence
// number (slots), the pending splits, and whether the group is broken. A collective completes when every member
// has arrived at its slot; a mismatch, a dead member or a member that left breaks the group, so every pending and
// future call on it fails at once with the report (NCCL's rule: a communicator that saw an error is unusable).

import type { CallSpec } from '../base-communicator.ts';
import { describeMismatch } from '../collective-match.ts';
import type { Communicator } from '../communicator.ts';
import { CollectiveError, type CollectiveErrorKind } from '../errors.ts';
import { place, rankList } from '../report.ts';
import { performCollective } from './exchange.ts';

export interface Arrival {
  groupRank: number;
  worldRank: number;
  call: CallSpec;
  /** Settles the rank's execute() promise; called through the scheduler. */
  settle: (err?: CollectiveError) => void;
}

export interface SplitRequest {
  groupRank: number;
  worldRank: number;
  index: number;
  color: number;
  key: number;
  name: string;
  settle: (result: Communicator | CollectiveError) => void;
}

interface Slot {
  seq: number;
  arrivals: (Arrival | undefined)[];
  count: number;
  failed?: { kind: CollectiveErrorKind; report: string };
}

interface SplitSlot {
  index: number;
  requests: (SplitRequest | undefined)[];
  count: number;
}

/** What a group needs from the world it lives in. */
export interface GroupHost {
  post(label: string, run: () => void): void;
  /** Creates the group and the member communicators of one split result (members in new group order). */
  createSplitGroup(parent: InprocGroup, name: string, members: readonly SplitRequest[]): Communicator[];
  /** "ranks 0,1,2 are in all_reduce #5 on group world" for the given world ranks. */
  positions(worldRanks: readonly number[]): string;
  /** The world's first failure, appended to later reports so a cascade still names its cause. */
  firstFailure(report: string): string;
}

export class InprocGroup {
  private readonly slots = new Map<number, Slot>();
  private readonly splitSlots = new Map<number, SplitSlot>();
  private readonly departed = new Map<number, string>();
  broken: { kind: CollectiveErrorKind; report: string } | undefined;

  constructor(
    readonly host: GroupHost,
    readonly id: number,
    readonly name: string,
    /** World ranks in group order. */
    readonly ranks: readonly number[],
    readonly multiNode: boolean,
  ) {}

  get size(): number {
    return this.ranks.length;
  }

  /** Pending slots, for diagnosis: seq, who arrived, who is missing. */
  pending(): { seq: number; arrived: Arrival[]; missing: number[] }[] {
    const out: { seq: number; arrived: Arrival[]; missing: number[] }[] = [];
    for (const s of this.slots.values()) {
      if (s.failed) continue;
      const arrived = s.arrivals.filter((a): a is Arrival => a !== undefined);
      const missing = this.ranks.filter((_, i) => !s.arrivals[i]);
      out.push({ seq: s.seq, arrived, missing });
    }
    return out.sort((a, b) => a.seq - b.seq);
  }

  /** The slot of `seq`: who arrived, who is missing, and its failure if it failed. */
  slotInfo(seq: number): { arrived: number[]; missing: number[]; failed?: string } | undefined {
    const s = this.slots.get(seq);
    if (!s) return undefined;
    return {
      arrived: this.ranks.filter((_, i) => s.arrivals[i]),
      missing: this.ranks.filter((_, i) => !s.arrivals[i]),
      failed: s.failed?.report,
    };
  }

  /** Pending splits: which world ranks called the split and which did not yet. */
  pendingSplits(): { index: number; arrived: number[]; missing: number[] }[] {
    return [...this.splitSlots.values()].map((s) => ({
      index: s.index,
      arrived: this.ranks.filter((_, i) => s.requests[i]),
      missing: this.ranks.filter((_, i) => !s.requests[i]),
    }));
  }

  hasPending(): boolean {
    return this.pending().length > 0 || this.splitSlots.size > 0;
  }

  arrive(a: Arrival): void {
    let slot = this.slots.get(a.call.seq);
    if (slot?.failed) return this.reject(a, slot.failed.kind, slot.failed.report);
    if (!slot) {
      // A new sequence number on a broken group can never complete.
      if (this.broken) return this.reject(a, this.broken.kind, this.broken.report);
      slot = { seq: a.call.seq, arrivals: new Array(this.size), count: 0 };
      this.slots.set(slot.seq, slot);
    }
    slot.arrivals[a.groupRank] = a;
    slot.count++;
    if (slot.count === this.size) this.complete(slot);
  }

  private complete(slot: Slot): void {
    this.slots.delete(slot.seq);
    const arrivals = slot.arrivals as Arrival[];
    const mismatch = describeMismatch(arrivals.map((a) => ({ rank: a.worldRank, entry: a.call.entry })));
    if (mismatch) {
      this.fail('mismatch', `mismatch: ${mismatch}`, arrivals);
      return;
    }
    try {
      performCollective(arrivals.map((a) => a.call));
    } catch (err) {
      this.fail(
        'invalid',
        `${place(arrivals[0]!.call.entry)} could not move its data: ${(err as Error).message}`,
        arrivals,
      );
      return;
    }
    for (const a of arrivals) this.host.post(`complete r${a.worldRank} ${place(a.call.entry)}`, () => a.settle());
  }

  /** Breaks the group: every pending call (plus `extra`) and every future one fails with `report`. */
  fail(kind: CollectiveErrorKind, report: string, extra: readonly Arrival[] = []): void {
    if (!this.broken) this.broken = { kind, report };
    for (const a of extra) this.reject(a, kind, report);
    for (const slot of this.slots.values()) if (!slot.failed) this.failSlot(slot, kind, report);
    for (const s of this.splitSlots.values()) {
      for (const r of s.requests) if (r) this.rejectSplit(r, kind, report);
    }
    this.splitSlots.clear();
  }

  /** A member left (its program ended, or it freed the group): calls it will never join fail from now on. */
  depart(groupRank: number, why: string): void {
    if (this.departed.has(groupRank)) return;
    this.departed.set(groupRank, why);
    for (const slot of this.slots.values()) {
      if (!slot.failed && !slot.arrivals[groupRank]) {
        const any = slot.arrivals.find((a) => a !== undefined)!;
        this.failSlot(slot, 'peer-dead', this.departureReport(groupRank, why, any.call));
      }
    }
    // Leaving is no failure by itself (a finished rank leaves every group); it becomes one when someone needs it.
    const report = `rank ${this.ranks[groupRank]} ${why} and will not join further collectives on group ${this.name}`;
    if (!this.broken) this.broken = { kind: 'peer-dead', report };
    for (const [index, s] of this.splitSlots) {
      if (s.requests[groupRank]) continue;
      for (const r of s.requests) if (r) this.rejectSplit(r, 'peer-dead', report);
      this.splitSlots.delete(index);
    }
  }

  allDeparted(): boolean {
    return this.departed.size === this.size;
  }

  split(req: SplitRequest): void {
    let s = this.splitSlots.get(req.index);
    if (!s && this.broken) return this.rejectSplit(req, this.broken.kind, this.broken.report);
    if (!s) {
      s = { index: req.index, requests: new Array(this.size), count: 0 };
      this.splitSlots.set(req.index, s);
    }
    s.requests[req.groupRank] = req;
    s.count++;
    if (s.count < this.size) return;
    this.splitSlots.delete(req.index);
    const requests = s.requests as SplitRequest[];
    const byColor = new Map<number, SplitRequest[]>();
    for (const r of requests) {
      const l = byColor.get(r.color);
      if (l) l.push(r);
      else byColor.set(r.color, [r]);
    }
    for (const [color, members] of byColor) {
      members.sort((a, b) => a.key - b.key || a.groupRank - b.groupRank);
      const names = new Set(members.map((m) => m.name));
      if (names.size > 1) {
        const report = `split #${req.index + 1} of group ${this.name}: the members of color ${color} (${rankList(members.map((m) => m.worldRank))}) named the new group differently: ${[...names].map((n) => `"${n}"`).join(', ')}`;
        for (const m of members) this.rejectSplit(m, 'mismatch', report);
        continue;
      }
      const comms = this.host.createSplitGroup(this, members[0]!.name, members);
      members.forEach((m, i) =>
        this.host.post(`split r${m.worldRank} ${this.name}→${m.name}`, () => m.settle(comms[i]!)),
      );
    }
  }

  private departureReport(groupRank: number, why: string, call: CallSpec): string {
    const waiting = this.ranks.filter((_, i) => i !== groupRank && !this.departed.has(i));
    return `rank ${this.ranks[groupRank]} ${why} without joining ${place(call.entry)}; ${this.host.positions(waiting)}`;
  }

  private failSlot(slot: Slot, kind: CollectiveErrorKind, report: string): void {
    slot.failed = { kind, report };
    for (const a of slot.arrivals) if (a) this.reject(a, kind, report);
  }

  private reject(a: Arrival, kind: CollectiveErrorKind, why: string): void {
    const report = this.host.firstFailure(why);
    const e = a.call.entry;
    const err = new CollectiveError(kind, `${place(e)} (rank ${a.worldRank}) failed: ${report}`, {
      group: this.name,
      op: a.call.op,
      seq: a.call.seq,
      rank: a.worldRank,
      report,
    });
    this.host.post(`fail r${a.worldRank} ${place(e)}`, () => a.settle(err));
  }

  private rejectSplit(r: SplitRequest, kind: CollectiveErrorKind, why: string): void {
    const report = this.host.firstFailure(why);
    const err = new CollectiveError(
      kind,
      `split of group ${this.name} into "${r.name}" (rank ${r.worldRank}) failed: ${report}`,
      {
        group: this.name,
        rank: r.worldRank,
        report,
      },
    );
    this.host.post(`fail split r${r.worldRank} ${this.name}`, () => r.settle(err));
  }
}
