// The inproc world: N ranks as async tasks on this event loop, their groups, the seeded scheduler, injected
// faults, and the global view that lets inproc explain a failure instead of waiting for a timeout. Because it sees
// every rank it can (a) fail every call on a group at once when a member dies, leaves or calls something else, and
// (b) detect a desync — every live rank waits in a collective and nothing moved for `stallMs` — and fail all of
// them with "rank 2 is in all_gather #57 on group ep, ranks 0,1,3 in reduce_scatter #58 on group fsdp".

import type { CallSpec, CommObserver } from '../base-communicator.ts';
import { describeMismatch } from '../collective-match.ts';
import { profileByName, type Profile, type ProfileName } from '../capabilities.ts';
import type { Communicator } from '../communicator.ts';
import { CollectiveError } from '../errors.ts';
import { FlightRecorder, type FlightDump } from '../flight-recorder.ts';
import type { Fault } from '../launch.ts';
import { describePositions, oldestPending, place, rankList, type Position } from '../report.ts';
import { InprocCommunicator } from './communicator.ts';
import { applyMismatch, FaultPlan, validateFaults } from './faults.ts';
import { InprocGroup, type Arrival, type GroupHost, type SplitRequest } from './group.ts';
import { SeededScheduler } from './scheduler.ts';

export interface InprocWorldOptions {
  profile?: ProfileName;
  /** Default per-collective timeout (default 30 s). */
  timeoutMs?: number;
  /** Seed of the arrival scheduler (default 0). */
  seed?: number;
  faults?: Fault[];
  /** Ranks per node, for 'single-node' capabilities (default: all on one node). */
  ranksPerNode?: number;
  /** Flight recorder ring size per rank (default 2000). */
  flightEntries?: number;
  /**
   * Desync detection: after this long without progress while every live rank waits in a collective, all of them
   * fail with the report. 0 disables it (then only timeouts end a hang). Default: timeout/20, within [20, 500] ms.
   * Only a rank that awaits something other than a collective while another of its collectives is in flight can
   * make this fire falsely; raise it (or disable it) for such programs.
   */
  stallMs?: number;
  observer?: CommObserver;
}

type RankState = { state: 'alive' } | { state: 'dead'; why: string } | { state: 'gone'; why: string };

export class InprocWorld implements GroupHost {
  readonly comms: InprocCommunicator[];
  readonly recorders: FlightRecorder[];
  readonly profile: Profile;
  readonly timeoutMs: number;
  readonly stallMs: number;
  readonly observer: CommObserver | undefined;
  readonly scheduler: SeededScheduler;
  private readonly ranksPerNode: number;
  private readonly faults: FaultPlan;
  private readonly groups = new Set<InprocGroup>();
  /** Calls issued whose arrival event has not run yet (posted, or held back by a delay fault). */
  private readonly unarrived = new Set<Arrival>();
  private nextGroupId = 0;
  private readonly status: RankState[];
  private readonly inflight: number[];
  /** Per rank: the splits in flight (a rank may issue several), described for reports. */
  private readonly splitting: string[][];
  private first: string | undefined;
  private stallTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly size: number,
    opts: InprocWorldOptions = {},
  ) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`inproc world size must be an integer ≥ 1, got ${size}`);
    this.profile = profileByName(opts.profile ?? 'full');
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.stallMs = opts.stallMs ?? Math.min(500, Math.max(20, Math.round(this.timeoutMs / 20)));
    this.observer = opts.observer;
    this.ranksPerNode = opts.ranksPerNode ?? size;
    if (!Number.isInteger(this.ranksPerNode) || this.ranksPerNode < 1) {
      throw new Error(`ranksPerNode must be an integer ≥ 1, got ${opts.ranksPerNode}`);
    }
    validateFaults(opts.faults ?? [], size);
    this.faults = new FaultPlan(opts.faults ?? []);
    this.scheduler = new SeededScheduler(opts.seed ?? 0);
    this.scheduler.onIdle = () => this.armStallDetector();
    const backend = `inproc/${this.profile.name}`;
    this.recorders = Array.from(
      { length: size },
      (_, r) => new FlightRecorder(r, size, backend, opts.flightEntries ?? 2000),
    );
    this.status = Array.from({ length: size }, () => ({ state: 'alive' }));
    this.inflight = new Array<number>(size).fill(0);
    this.splitting = Array.from({ length: size }, () => []);
    const world = this.createGroup(
      'world',
      Array.from({ length: size }, (_, r) => r),
    );
    this.comms = world.ranks.map((_, r) => new InprocCommunicator(this, world, r));
  }

  // ---- calls from the communicators ----

  /** Injected faults that never took effect, with why (see FaultPlan.unapplied). */
  unappliedFaults(): string[] {
    return this.faults.unapplied();
  }

  submit(comm: InprocCommunicator, call: CallSpec): Promise<void> {
    const wr = comm.worldRank;
    const st = this.status[wr]!;
    if (st.state !== 'alive') {
      return Promise.reject(
        new CollectiveError('aborted', `rank ${wr} is ${st.state} (${st.why}); it cannot call ${place(call.entry)}`, {
          group: comm.name,
          op: call.op,
          seq: call.seq,
          rank: wr,
        }),
      );
    }
    const fault = this.faults.at(wr, comm.name, call.seq);
    if (fault?.kind === 'kill') {
      const why = `killed by fault injection when it issued ${place(call.entry)}`;
      this.kill(wr, why);
      return Promise.reject(
        new CollectiveError('aborted', `rank ${wr} was ${why}`, {
          group: comm.name,
          op: call.op,
          seq: call.seq,
          rank: wr,
        }),
      );
    }
    if (fault) applyMismatch(call, fault, comm.rank);
    return new Promise<void>((resolve, reject) => {
      this.inflight[wr]!++;
      let settled = false;
      const arrival: Arrival = {
        groupRank: comm.rank,
        worldRank: wr,
        call,
        settle: (err) => {
          if (settled) return;
          settled = true;
          this.inflight[wr]!--;
          if (err) reject(err);
          else resolve();
        },
      };
      const label = `arrive r${wr} ${place(call.entry)}`;
      this.unarrived.add(arrival);
      const run = () => {
        // A call that timed out (or was interrupted) while a delay fault held it back has been settled already.
        if (!this.unarrived.delete(arrival)) return;
        comm.group.arrive(arrival);
      };
      const delay = this.faults.delay(wr, comm.name, call.seq);
      if (delay > 0) this.scheduler.postAfter(delay, label, run);
      else this.scheduler.post(label, run);
    });
  }

  submitSplit(
    comm: InprocCommunicator,
    index: number,
    color: number,
    key: number,
    name: string,
  ): Promise<Communicator> {
    const wr = comm.worldRank;
    const st = this.status[wr]!;
    if (st.state !== 'alive') {
      return Promise.reject(
        new CollectiveError('aborted', `rank ${wr} is ${st.state} (${st.why}); it cannot split group ${comm.name}`, {
          group: comm.name,
          rank: wr,
        }),
      );
    }
    return new Promise<Communicator>((resolve, reject) => {
      const label = `in split of group ${comm.name} into "${name}"`;
      this.splitting[wr]!.push(label);
      const req: SplitRequest = {
        groupRank: comm.rank,
        worldRank: wr,
        index,
        color,
        key,
        name,
        settle: (res) => {
          const list = this.splitting[wr]!;
          list.splice(list.indexOf(label), 1);
          if (res instanceof CollectiveError) reject(res);
          else resolve(res);
        },
      };
      this.scheduler.post(`split-request r${wr} ${comm.name}#${index}`, () => comm.group.split(req));
    });
  }

  leaveGroup(comm: InprocCommunicator, why: string): void {
    comm.group.depart(comm.rank, why);
    if (comm.group.allDeparted()) this.groups.delete(comm.group);
  }

  /** Report for a call that timed out on `group`: who joined, who is missing and where those are. */
  diagnoseCall(group: InprocGroup, call: CallSpec): string {
    const slot = group.slotInfo(call.seq);
    if (!slot) {
      return group.broken
        ? group.broken.report
        : `${place(call.entry)} is not pending any more (it completed concurrently)`;
    }
    // Timers of several ranks fire in the same tick; the ones after the first see the slot already failed.
    if (slot.failed) return slot.failed;
    if (slot.missing.length === 0) return `every member joined ${place(call.entry)}, but it did not complete`;
    const here = place(call.entry);
    // A missing rank that already issued this very call has only not arrived: a 'delay' fault holds it back.
    const where = describePositions(
      slot.missing.map((r) => {
        const p = this.position(r);
        return p.where === `in ${here}`
          ? { rank: r, where: `in ${here} but its arrival is delayed (fault injection)` }
          : p;
      }),
    );
    return `waiting for ${rankList(slot.missing)}: ${where}; ${rankList(slot.arrived)} joined ${here}`;
  }

  onTimeout(comm: InprocCommunicator, call: CallSpec): void {
    const report = this.firstFailure(
      `rank ${comm.worldRank} timed out after ${call.timeoutMs} ms in ${place(call.entry)}: ${this.diagnoseCall(comm.group, call)}`,
    );
    comm.group.fail('timeout', report);
    // The timed-out call may itself be held back by a delay fault: it ends now, not when its delay does (a 5 s
    // timeout must not wait out a 30 s delay), and the rank stops counting as waiting in it.
    for (const a of this.unarrived) {
      if (a.call !== call) continue;
      this.unarrived.delete(a);
      a.settle(
        new CollectiveError('timeout', report, { group: comm.name, op: call.op, seq: call.seq, rank: a.worldRank }),
      );
    }
  }

  /** Drops delayed arrivals that have not fired (the launch ended: nothing waits for them any more). */
  dropDelayed(): void {
    this.scheduler.cancelDelayed();
    this.unarrived.clear();
  }

  // ---- rank life cycle (launchInproc, tests) ----

  /** The rank dies: it never arrives anywhere again, and every group it belongs to fails at once. */
  kill(rank: number, why: string): void {
    if (this.status[rank]!.state !== 'alive') return;
    this.status[rank] = { state: 'dead', why };
    const report = this.firstFailure(`rank ${rank} died (${why})`);
    for (const g of this.groups) if (g.ranks.includes(rank)) g.fail('peer-dead', report);
  }

  /** Stops the run from outside (the launcher's signal): every group fails, pending and later calls with it. */
  interrupt(why: string): void {
    const report = this.firstFailure(`the run was stopped: ${why}`);
    for (const g of [...this.groups]) g.fail('aborted', report);
    // Calls still on their way to their group (a delay fault holds them back) fail too, and their timers go.
    this.scheduler.cancelDelayed();
    for (const a of [...this.unarrived]) {
      this.unarrived.delete(a);
      a.settle(
        new CollectiveError('aborted', `${place(a.call.entry)} (rank ${a.worldRank}) failed: ${report}`, {
          op: a.call.op,
          seq: a.call.seq,
          rank: a.worldRank,
        }),
      );
    }
  }

  /** The rank's program ended (returned or threw): collectives it never joined fail from now on. */
  exit(rank: number, why: string): void {
    if (this.status[rank]!.state !== 'alive') return;
    this.status[rank] = { state: 'gone', why };
    for (const g of [...this.groups]) {
      const gr = g.ranks.indexOf(rank);
      if (gr < 0) continue;
      g.depart(gr, why);
      if (g.allDeparted()) this.groups.delete(g);
    }
  }

  isAlive(rank: number): boolean {
    return this.status[rank]!.state === 'alive';
  }

  /** Whether the rank has a collective or a split in flight. */
  isWaiting(rank: number): boolean {
    return this.inflight[rank]! > 0 || this.splitting[rank]!.length > 0;
  }

  /** Every rank's flight dump, as the ranks would write them. */
  dumps(reason: string): FlightDump[] {
    return this.recorders.map((r) => r.dump(reason));
  }

  /** The labels of the scheduler's events so far: the interleaving (same seed ⇒ same log). */
  scheduleLog(): readonly string[] {
    return this.scheduler.log();
  }

  /** The first failure in this world, if any ("rank 3 died (…)"). */
  get firstFailureReport(): string | undefined {
    return this.first;
  }

  // ---- GroupHost ----

  post(label: string, run: () => void): void {
    this.scheduler.post(label, run);
  }

  createSplitGroup(_parent: InprocGroup, name: string, members: readonly SplitRequest[]): Communicator[] {
    const g = this.createGroup(
      name,
      members.map((m) => m.worldRank),
    );
    return members.map((_, i) => new InprocCommunicator(this, g, i));
  }

  positions(worldRanks: readonly number[]): string {
    return describePositions(worldRanks.map((r) => this.position(r)));
  }

  firstFailure(report: string): string {
    if (this.first === undefined) {
      this.first = report;
      return report;
    }
    return report === this.first || report.includes(this.first)
      ? report
      : `${report} (first failure in this world: ${this.first})`;
  }

  // ---- internals ----

  private createGroup(name: string, ranks: readonly number[]): InprocGroup {
    const nodes = new Set(ranks.map((r) => Math.floor(r / this.ranksPerNode)));
    const g = new InprocGroup(this, this.nextGroupId++, name, ranks, nodes.size > 1);
    this.groups.add(g);
    return g;
  }

  private position(rank: number): Position {
    const st = this.status[rank]!;
    if (st.state === 'dead') return { rank, where: `dead (${st.why})` };
    if (st.state === 'gone') return { rank, where: `gone (${st.why})` };
    const e = oldestPending(this.recorders[rank]!.entries());
    if (e) return { rank, where: `in ${place(e)}` };
    if (this.splitting[rank]!.length > 0) return { rank, where: this.splitting[rank]![0]! };
    return { rank, where: 'not in a collective' };
  }

  private armStallDetector(): void {
    if (this.stallMs <= 0 || this.stallTimer !== undefined) return;
    if (!this.inflight.some((n) => n > 0) && !this.splitting.some((s) => s.length > 0)) return;
    const progress = this.scheduler.progress;
    this.stallTimer = setTimeout(() => {
      this.stallTimer = undefined;
      // Busy: the scheduler reports idle again when it drains. Progress: a new quiet period starts now.
      if (this.scheduler.busy) return;
      if (this.scheduler.progress !== progress || !this.allLiveRanksWait()) return this.armStallDetector();
      this.declareDesync();
    }, this.stallMs);
    this.stallTimer.unref?.();
  }

  private allLiveRanksWait(): boolean {
    let live = 0;
    for (let r = 0; r < this.size; r++) {
      if (this.status[r]!.state !== 'alive') continue;
      live++;
      if (!this.isWaiting(r)) return false;
    }
    return live > 0;
  }

  private declareDesync(): void {
    const waits: string[] = [];
    const stuck: InprocGroup[] = [];
    for (const g of this.groups) {
      if (!g.hasPending()) continue;
      stuck.push(g);
      for (const s of g.pending()) {
        const e = s.arrived[0]!.call.entry;
        const mismatch = describeMismatch(s.arrived.map((a) => ({ rank: a.worldRank, entry: a.call.entry })));
        waits.push(`${place(e)} waits for ${rankList(s.missing)}${mismatch ? ` (and ${mismatch})` : ''}`);
      }
      for (const s of g.pendingSplits())
        waits.push(`split #${s.index + 1} of group ${g.name} waits for ${rankList(s.missing)}`);
    }
    const all = Array.from({ length: this.size }, (_, r) => r);
    const report = this.firstFailure(
      `desync: nothing moved for ${this.stallMs} ms and every live rank waits in a collective that cannot complete: ` +
        `${this.positions(all)}. ${waits.join('; ')}`,
    );
    for (const g of stuck) g.fail('mismatch', report);
  }
}

export function createInprocWorld(size: number, opts: InprocWorldOptions = {}): InprocWorld {
  return new InprocWorld(size, opts);
}
