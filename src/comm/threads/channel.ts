// One rank's side of the phase protocol on one group's arena (see arena.ts): wait until peers have read my slot,
// arrive at the next phase and wait for everyone else, publish that I finished reading. Every wait re-checks the
// reasons to give up — the group was poisoned (a peer timed out or was stopped), a peer is gone (died, failed,
// finished), this rank was stopped, or the call was cancelled by its timeout — and names whom it waited for.

import type { CollectiveOp } from '../communicator.ts';
import { CollectiveError, type CollectiveErrorKind } from '../errors.ts';
import { describePoison, type Arena, type Descriptor, type PoisonKind } from './arena.ts';
import type { PeerBuffers } from './buffers.ts';
import { describeLife, type LifeBoard } from './life.ts';
import { waitChange } from './wait.ts';

/** Longest single wait before re-checking the reasons to give up (deaths also notify, so this is a backstop). */
const SLICE_MS = 200;

type SlotCtor<T> = { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number; name: string };

export interface CurrentCall {
  op: CollectiveOp;
  seq: number;
  /** Set by the communicator's timeout: the call must stop waiting. */
  cancelled: boolean;
  deadline: number;
  /** What this rank is waiting for right now (for status and timeout reports). */
  waiting: { kind: 'arrive' | 'done'; phase: number } | null;
}

export interface ChannelInit {
  arena: Arena;
  /** Group rank of this rank. */
  me: number;
  worldRanks: readonly number[];
  life: LifeBoard;
  group: string;
  /** Why this rank was stopped, if it was. */
  stopReason: () => string | null;
  /** Registration of SharedArrayBuffer send arrays that peers read in place (null: always stage through slots). */
  buffers?: PeerBuffers | null;
  /** Smallest send array (bytes) lent to peers in place; smaller ones go through the slots. */
  directMinBytes?: number;
}

/** Where peers read a lent send array: its buffer's registration id and the array's element offset. */
export interface Lent {
  buf: number;
  off: number;
}

export class GroupChannel {
  readonly arena: Arena;
  readonly me: number;
  readonly size: number;
  readonly worldRanks: readonly number[];
  readonly group: string;
  /** Last phase this rank arrived at. */
  phase = 0;
  current: CurrentCall | null = null;
  private readonly life: LifeBoard;
  private readonly stopReason: () => string | null;
  readonly buffers: PeerBuffers | null;
  private readonly directMinBytes: number;
  /** Calls in which this rank lent its send array to the peers (status, tests). */
  lentCalls = 0;

  constructor(init: ChannelInit) {
    this.arena = init.arena;
    this.me = init.me;
    this.size = init.arena.size;
    this.worldRanks = init.worldRanks;
    this.group = init.group;
    this.life = init.life;
    this.stopReason = init.stopReason;
    this.buffers = init.buffers ?? null;
    this.directMinBytes = init.directMinBytes ?? Infinity;
  }

  /**
   * Whether peers can read `a` in place (it lives on a SharedArrayBuffer and is large enough that saving its copy
   * into the slot pays for the registration and the wait for readers at the end of the call): where they find
   * it, or null.
   */
  lend(a: ArrayBufferView & { length: number; BYTES_PER_ELEMENT: number }): Lent | null {
    if (this.buffers === null || this.size === 1 || a.byteLength < this.directMinBytes || a.byteLength === 0)
      return null;
    if (!(a.buffer instanceof SharedArrayBuffer)) return null;
    const off = a.byteOffset / a.BYTES_PER_ELEMENT;
    if (!Number.isInteger(off) || off > 0x7fffffff) return null;
    this.lentCalls++;
    return { buf: this.buffers.idOf(a.buffer), off };
  }

  /** `n` elements of rank q's lent send array (after arrive(): q's descriptor names it), waiting for its registration. */
  async peerArray<T extends Float32Array | Float64Array | Int32Array | Uint16Array>(
    q: number,
    d: Descriptor,
    ctor: SlotCtor<T>,
    n: number,
  ): Promise<T> {
    const owner = this.worldRanks[q]!;
    if (this.buffers === null)
      throw new Error(`group ${this.group}: rank ${q} lent its send buffer, but this rank has no buffer registry`);
    let sab = this.buffers.get(owner, d.buf);
    for (let waitMs = 1; sab === undefined; waitMs = Math.min(2 * waitMs, SLICE_MS)) {
      this.giveUpIfNeeded(q, 'arrive');
      // Usually in flight; if this thread opened its channel after the owner posted it, ask again.
      if (waitMs > 1) this.buffers.want(owner, d.buf);
      await this.buffers.changed(waitMs);
      sab = this.buffers.get(owner, d.buf);
    }
    return new ctor(sab, d.off * ctor.BYTES_PER_ELEMENT, n);
  }

  /** After lending my send array: waits until every peer has finished reading the current phase (so the caller may reuse it). */
  async waitReaders(): Promise<void> {
    await this.waitAll('done', this.phase);
  }

  /**
   * Before writing my slot for the next phase: every peer has finished reading the phase that last used the same
   * half (two phases back), so the other half may still be in use by slower peers.
   */
  async beginWrite(): Promise<void> {
    await this.waitAll('done', this.phase - 1);
  }

  /** Half of the slots the next phase writes (before arrive()). */
  get writeHalf(): number {
    return (this.phase + 1) & 1;
  }

  /** Half of the slots the current phase reads (after arrive()). */
  get readHalf(): number {
    return this.phase & 1;
  }

  /** My slot, the half the next phase publishes. */
  out<T extends Float32Array | Float64Array | Int32Array | Uint16Array>(ctor: SlotCtor<T>): T {
    return this.arena.slot(this.me, this.writeHalf, ctor);
  }

  /** Rank q's slot, the half the current phase published. */
  in<T extends Float32Array | Float64Array | Int32Array | Uint16Array>(q: number, ctor: SlotCtor<T>): T {
    return this.arena.slot(q, this.readHalf, ctor);
  }

  /**
   * Publishes my slot for the next phase and waits until every peer has published theirs. `meanwhile` runs between
   * the two: local work (copying my own block) that would otherwise sit on the critical path after the wait.
   */
  async arrive(meanwhile?: () => void): Promise<void> {
    this.phase++;
    this.arena.publishArrive(this.me, this.phase);
    meanwhile?.();
    await this.waitAll('arrive', this.phase);
  }

  finishRead(): void {
    this.arena.publishDone(this.me, this.phase);
  }

  /** Group ranks that have not yet reached what this rank currently waits for. */
  missing(): number[] {
    const w = this.current?.waiting;
    if (!w) return [];
    const out: number[] = [];
    for (let q = 0; q < this.size; q++) {
      if (q === this.me) continue;
      const v = w.kind === 'arrive' ? this.arena.arrive(q) : this.arena.done(q);
      if (v < w.phase) out.push(q);
    }
    return out;
  }

  private async waitAll(kind: 'arrive' | 'done', phase: number): Promise<void> {
    if (phase <= 0) return;
    const h = this.arena.h;
    const call = this.current;
    for (let q = 0; q < this.size; q++) {
      if (q === this.me) continue;
      const idx = kind === 'arrive' ? this.arena.arriveIndex(q) : this.arena.doneIndex(q);
      let seen = Atomics.load(h, idx);
      if (seen >= phase) continue;
      if (call) call.waiting = { kind, phase };
      while (seen < phase) {
        this.giveUpIfNeeded(q, kind, () => Atomics.load(h, idx) >= phase);
        await waitChange(h, idx, seen, SLICE_MS);
        seen = Atomics.load(h, idx);
      }
    }
    if (call) call.waiting = null;
  }

  /**
   * Throws if waiting for rank q is hopeless. `reached` re-reads what the wait is for: a peer may arrive, finish
   * the collective and end its program between this rank's last read and its look at the liveness board, and
   * that peer is not dead to this collective.
   */
  private giveUpIfNeeded(q: number, kind: 'arrive' | 'done', reached?: () => boolean): void {
    const call = this.current;
    const what = call ? `${call.op} #${call.seq}` : 'a collective';
    const who = `rank ${this.me} of group ${this.group} (world rank ${this.worldRanks[this.me]})`;
    const peer = `rank ${q} (world rank ${this.worldRanks[q]})`;
    const fail = (k: CollectiveErrorKind, msg: string): never => {
      throw new CollectiveError(k, msg, { group: this.group, op: call?.op, seq: call?.seq, rank: this.me });
    };
    if (call?.cancelled) fail('aborted', `${who}: ${what} was cancelled after its timeout`);
    const stop = this.stopReason();
    if (stop !== null) fail('aborted', `${who} was stopped (${stop}) while waiting in ${what}`);
    const wr = this.worldRanks[q]!;
    const state = this.life.get(wr);
    if (this.life.gone(wr) && !reached?.()) {
      // Name the dead peer as the culprit, so members waiting on someone else report the same root cause.
      this.arena.poison(
        wr,
        state === 'stopped' ? 'stopped' : state === 'finished' ? 'finished' : state === 'failed' ? 'failed' : 'died',
      );
      // The first poison wins. If another member already named a culprit, this peer most likely failed because of
      // it (it threw on the same death): report that, so every member names the root cause.
      const first = this.arena.poisoned();
      if (first && first.worldRank !== wr)
        fail(
          poisonError(first.kind),
          `${who} waited in ${what} for ${peer}, but group ${this.group} is unusable: ${describePoison(first.worldRank, first.kind)}`,
        );
      const stage = kind === 'arrive' ? 'to arrive' : 'to finish reading the previous phase';
      fail('peer-dead', `${who} waited in ${what} for ${peer} ${stage}, but it ${describeLife(state)}`);
    }
    const p = this.arena.poisoned();
    if (p)
      fail(
        poisonError(p.kind),
        `${who} waited in ${what} for ${peer}, but group ${this.group} is unusable: ${describePoison(p.worldRank, p.kind)}`,
      );
    if (call && performance.now() > call.deadline) {
      fail('timeout', `${who} waited past its deadline in ${what} for ${peer}`);
    }
  }
}

function poisonError(kind: PoisonKind): CollectiveErrorKind {
  switch (kind) {
    case 'timeout':
      return 'timeout';
    case 'mismatch':
      return 'mismatch';
    case 'stopped':
      return 'aborted';
    default:
      return 'peer-dead';
  }
}
