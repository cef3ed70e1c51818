// The threads transport's Communicator: BaseCommunicator's checks, sequence numbers, flight entries and timeouts
// around the arena collectives. Calls on one group run strictly in issue order (a promise chain), because they
// share the group's slots; calls on different groups run concurrently.

import { BaseCommunicator, type CallSpec, type CommObserver } from '../base-communicator.ts';
import { FULL, type Profile } from '../capabilities.ts';
import type { Communicator } from '../communicator.ts';
import { CollectiveError } from '../errors.ts';
import { Arena, type ArenaHandle, type PoisonKind } from './arena.ts';
import { GroupChannel, type CurrentCall } from './channel.ts';
import { runCollective } from './collectives.ts';
import { describeLife } from './life.ts';
import type { RankRuntime, RuntimeMember } from './runtime.ts';

export interface ThreadsCommInit {
  runtime: RankRuntime;
  arena: ArenaHandle;
  rank: number;
  ranks: readonly number[];
  name: string;
  profile: Profile;
  timeoutMs: number;
  observer?: CommObserver;
}

export class ThreadsCommunicator extends BaseCommunicator implements RuntimeMember {
  readonly channel: GroupChannel;
  private readonly runtime: RankRuntime;
  private queue: Promise<void> = Promise.resolve();
  /** Set once a call failed mid-protocol: the phase counters no longer line up, so the group cannot be reused. */
  private broken: string | null = null;
  private current: { spec: CallSpec; call: CurrentCall } | null = null;

  /** Peers read SharedArrayBuffer-backed send arrays in place (buffers.ts), saving the sender's staging copy. */
  override get peerReadsInPlace(): boolean {
    return true;
  }

  constructor(init: ThreadsCommInit) {
    const nodes = new Set(init.ranks.map((r) => init.runtime.nodeOf(r)));
    super({
      rank: init.rank,
      size: init.ranks.length,
      ranks: init.ranks,
      name: init.name,
      transport: 'threads',
      profile: init.profile,
      transportCaps: FULL,
      recorder: init.runtime.recorder,
      timeoutMs: init.timeoutMs,
      multiNode: nodes.size > 1,
      observer: init.observer,
    });
    this.runtime = init.runtime;
    const arena = new Arena(init.arena);
    if (arena.size !== init.ranks.length)
      throw new Error(`group ${init.name}: arena has ${arena.size} slots for ${init.ranks.length} ranks`);
    this.channel = new GroupChannel({
      arena,
      me: init.rank,
      worldRanks: init.ranks,
      life: init.runtime.life,
      group: init.name,
      stopReason: () => init.runtime.stopReason,
      buffers: init.runtime.buffers,
      directMinBytes: init.runtime.directMinBytes,
    });
    init.runtime.members.add(this);
  }

  protected execute(spec: CallSpec): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.broken !== null) {
        throw new CollectiveError(
          'aborted',
          `${spec.op} #${spec.seq} on group ${this.name}: the group is unusable after an earlier failure (${this.broken})`,
          {
            group: this.name,
            op: spec.op,
            seq: spec.seq,
            rank: this.rank,
          },
        );
      }
      const call: CurrentCall = {
        op: spec.op,
        seq: spec.seq,
        cancelled: false,
        deadline: performance.now() + spec.timeoutMs + 1000,
        waiting: null,
      };
      this.current = { spec, call };
      this.channel.current = call;
      try {
        await runCollective(this.channel, spec);
      } catch (e) {
        // Argument errors are raised before the first phase; anything later leaves the peers mid-protocol.
        if (!(e instanceof CollectiveError && e.kind === 'invalid')) this.broken ??= (e as Error).message;
        throw e;
      } finally {
        this.current = null;
        this.channel.current = null;
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => {});
    return p;
  }

  protected override onTimeout(spec: CallSpec): void {
    this.broken ??= `timeout in ${spec.op} #${spec.seq}`;
    if (this.current?.spec === spec) this.current.call.cancelled = true;
    this.poison('timeout');
  }

  protected override diagnose(spec: CallSpec): string {
    const me = `rank ${this.rank} of group ${this.name} (world rank ${this.ranks[this.rank]})`;
    if (this.current?.spec !== spec) {
      return `${me} never started ${spec.op} #${spec.seq}: an earlier call on this group was still running`;
    }
    const missing = this.channel.missing();
    const w = this.current.call.waiting;
    if (!w || missing.length === 0) return `${me} was copying data in ${spec.op} #${spec.seq} when the timeout fired`;
    const life = this.runtime.life;
    const who = missing.map((q) => {
      const wr = this.ranks[q]!;
      const d = this.channel.arena.lastDescriptor(q);
      const last = d.op === 'none' ? 'no call yet on this group' : `last entered ${d.op} #${d.seq}`;
      const state = life.gone(wr) ? `, ${describeLife(life.get(wr))}` : '';
      return `rank ${q} (world ${wr}; ${last}${state})`;
    });
    const stage = w.kind === 'arrive' ? 'to arrive' : 'to finish reading the previous phase';
    return `${me} waited ${spec.timeoutMs} ms in ${spec.op} #${spec.seq} for ${who.join(', ')} ${stage}`;
  }

  poison(kind: PoisonKind): void {
    this.channel.arena.poison(this.runtime.worldRank, kind);
  }

  currentWait(): { group: string; op: string; seq: number; phase: number; waitingFor: number[] } | null {
    const c = this.current;
    if (!c) return null;
    return {
      group: this.name,
      op: c.spec.op,
      seq: c.spec.seq,
      phase: this.channel.phase,
      waitingFor: this.channel.missing().map((q) => this.ranks[q]!),
    };
  }

  protected async splitImpl(color: number, key: number, name: string): Promise<Communicator> {
    if (!Number.isInteger(color) || color < 0 || !Number.isInteger(key)) {
      throw new CollectiveError(
        'invalid',
        `split of ${this.name} into ${name}: color must be a non-negative integer and key an integer (got ${color}, ${key})`,
        {
          group: this.name,
        },
      );
    }
    const { members, seq: splitSeq } = await this.splitMembers(color, key, name);
    const worldRanks = members.map((q) => this.ranks[q]!);
    const arenaKey = `name:${name}/${this.channel.arena.id}/${splitSeq}/${color}`;
    const handle = await this.runtime.broker.arena(
      arenaKey,
      members.length,
      this.runtime.slotBytes,
      worldRanks,
      name,
      this.timeoutMs,
    );
    return new ThreadsCommunicator({
      runtime: this.runtime,
      arena: handle,
      rank: members.indexOf(this.rank),
      ranks: worldRanks,
      name,
      profile: this.profile,
      timeoutMs: this.timeoutMs,
      observer: this.observer,
    });
  }

  protected async freeImpl(): Promise<void> {
    await this.queue;
    this.runtime.members.delete(this);
    if (this.name !== 'world') this.runtime.broker.post({ type: 'arena-release', arenaId: this.channel.arena.id });
  }
}
