// The mpi transport's Communicator: BaseCommunicator's checks, sequence numbers, flight entries and timeouts
// around MPI nonblocking collectives on the caller's own typed arrays (no copies, except premul_sum's scaled send).
// Every MPI_I* call is made synchronously inside execute(), so calls reach MPI in the order the program issued
// them — the order MPI requires on every rank — even when several are in flight on one communicator.
//
// Reductions MPI lacks are composed: premul_sum = multiply locally, then SUM; avg = SUM, then divide.
// MPI reduces in its own (tree) order, so float sums equal the rank-order reference only up to reassociation.

import { sumBf16Into } from '../../tensor/bf16.ts';
import { BaseCommunicator, type CallSpec, type CommObserver } from '../base-communicator.ts';
import { FULL, type Profile } from '../capabilities.ts';
import type { CommArray, Communicator } from '../communicator.ts';
import { CollectiveError } from '../errors.ts';
import { divideInPlace, scaleInto } from '../reduce.ts';
import type { Arr, MpiBinding, ReduceCode } from './native.ts';
import type { MpiWorld } from './world.ts';

/**
 * The nonblocking calls one group's collectives start, each returning a request id for the poller. MPI's are
 * below; the ccl transport supplies oneCCL's (src/comm/ccl/), and everything around them — checks, premul_sum and
 * avg composed from SUM, ordering, timeouts, splitting over MPI — is shared.
 */
export interface CollectiveCalls {
  allGather(send: Arr, recv: Arr): number;
  allGatherV(send: Arr, recv: Arr, counts: Int32Array): number;
  reduceScatter(send: Arr, recv: Arr, op: ReduceCode): number;
  allReduce(buf: Arr, op: ReduceCode): number;
  allToAllV(send: Arr, sendCounts: Int32Array, recv: Arr, recvCounts: Int32Array): number;
  broadcast(buf: Arr, root: number): number;
  barrier(): number;
}

export function mpiCalls(b: MpiBinding, h: number): CollectiveCalls {
  return {
    allGather: (s, r) => b.iallgather(h, s, r),
    allGatherV: (s, r, c) => b.iallgatherv(h, s, r, c),
    reduceScatter: (s, r, op) => b.ireduceScatterBlock(h, s, r, op),
    allReduce: (buf, op) => b.iallreduce(h, buf, op),
    allToAllV: (s, sc, r, rc) => b.ialltoallv(h, s, sc, r, rc),
    broadcast: (buf, root) => b.ibcast(h, buf, root),
    barrier: () => b.ibarrier(h),
  };
}

export interface MpiCommInit {
  world: MpiWorld;
  /** The MPI communicator: it carries the collectives under mpi, and splits and bootstrap under ccl. */
  handle: number;
  rank: number;
  ranks: readonly number[];
  name: string;
  profile: Profile;
  timeoutMs: number;
  observer?: CommObserver;
  /** Default: 'mpi' with MPI's calls on `handle`. */
  transport?: 'mpi' | 'ccl';
  calls?: CollectiveCalls;
}

const i32 = (xs: readonly number[]) => Int32Array.from(xs);

export class MpiCommunicator extends BaseCommunicator {
  readonly handle: number;
  protected readonly world: MpiWorld;
  private readonly calls: CollectiveCalls;
  /** Calls issued and not yet settled, and who waits for them all to settle (free). */
  private inflight = 0;
  private drained: (() => void) | null = null;
  /**
   * premul_sum's scaled copy of the send array, kept for the next call (per element type, the largest so far): a
   * fresh large array is zero-filled by page faults on first touch, which cost about as much as the transfer
   * (FSDP's gradient reduce_scatter uses premul_sum on every step). A call that finds it busy uses a fresh one.
   */
  private readonly scratch = new Map<unknown, { buf: CommArray; busy: boolean }>();

  constructor(init: MpiCommInit) {
    super({
      rank: init.rank,
      size: init.ranks.length,
      ranks: init.ranks,
      name: init.name,
      transport: init.transport ?? 'mpi',
      profile: init.profile,
      transportCaps: FULL,
      recorder: init.world.recorder,
      timeoutMs: init.timeoutMs,
      multiNode: init.world.multiNode(init.ranks),
      observer: init.observer,
    });
    this.world = init.world;
    this.handle = init.handle;
    this.calls = init.calls ?? mpiCalls(init.world.b, init.handle);
  }

  // The MPI_I* call happens synchronously, inside execute(), which keeps the issue order; a throw from the binding
  // becomes a rejection. No async wrapper and no per-call promise bookkeeping beyond the poller's own promise:
  // the fixed cost of a call is paid on every collective.
  protected execute(c: CallSpec): Promise<void> {
    const held: { release?: () => void } = {};
    try {
      return this.issue(c, held);
    } catch (e) {
      held.release?.();
      return Promise.reject(e);
    }
  }

  private issue(c: CallSpec, held: { release?: () => void }): Promise<void> {
    const b = this.calls;
    const code: ReduceCode = c.reduce?.op === 'max' ? 1 : 0;
    let req: number;
    let bytes = 0;
    let after: (() => void) | undefined;
    let release: (() => void) | undefined;
    switch (c.op) {
      case 'all_gather':
        req = b.allGather(c.send!, c.recv!);
        bytes = c.recv!.byteLength;
        break;
      case 'all_gather_v':
        req = b.allGatherV(c.send!, c.recv!, i32(c.counts!));
        bytes = c.recv!.byteLength;
        break;
      case 'reduce_scatter': {
        const r = c.reduce!;
        let send = c.send!;
        if (send instanceof Uint16Array) {
          // bf16: MPI's own sum would add the bit patterns as integers. Each rank receives every rank's block as
          // bf16 (all_to_all, the same bytes a reduce_scatter moves) and sums it in float32 in rank order,
          // rounding once — the contract of src/comm/reduce.ts, bitwise equal to inproc and threads.
          const P = this.size;
          const n = c.recv!.length;
          const blocks = new Uint16Array(P * n);
          const counts = i32(new Array<number>(P).fill(n));
          req = b.allToAllV(send, counts, blocks, counts);
          bytes = send.byteLength;
          after = () =>
            sumBf16Into(
              c.recv as Uint16Array,
              new Array(P).fill(blocks),
              Array.from({ length: P }, (_, q) => q * n),
              n,
            );
          break;
        }
        if (r.op === 'premul_sum') {
          const s = this.scaled(send, r.factor);
          send = s.arr;
          release = held.release = s.release;
        }
        req = b.reduceScatter(send, c.recv!, code);
        bytes = send.byteLength;
        if (r.op === 'avg') after = () => divideInPlace(c.recv!, this.size);
        break;
      }
      case 'all_reduce': {
        const r = c.reduce!;
        // In place: the buffer is overwritten by the result anyway, so it can carry the scaled contribution.
        if (r.op === 'premul_sum') scaleInto(c.buf!, c.buf!, r.factor);
        req = b.allReduce(c.buf!, code);
        bytes = c.buf!.byteLength;
        if (r.op === 'avg') after = () => divideInPlace(c.buf!, this.size);
        break;
      }
      case 'all_to_all_v':
        req = b.allToAllV(c.send!, i32(c.sendCounts!), c.recv!, i32(c.recvCounts!));
        bytes = c.send!.byteLength + c.recv!.byteLength;
        break;
      case 'broadcast':
        req = b.broadcast(c.buf!, c.root!);
        bytes = c.buf!.byteLength;
        break;
      case 'barrier':
        req = b.barrier();
        break;
    }
    this.inflight++;
    return this.world.poller.wait(req, { group: this.name, op: c.op, seq: c.seq, rank: this.rank }, bytes).then(
      () => {
        this.settled();
        release?.();
        after?.();
      },
      (e: unknown) => {
        this.settled();
        release?.();
        throw e;
      },
    );
  }

  private scaled(a: CommArray, factor: number): { arr: CommArray; release: (() => void) | undefined } {
    const ctor = a.constructor as { new (n: number): CommArray };
    let s = this.scratch.get(ctor);
    let arr: CommArray;
    let release: (() => void) | undefined;
    if (s && s.busy) {
      arr = new ctor(a.length);
    } else {
      if (!s || s.buf.length < a.length) {
        s = { buf: new ctor(a.length), busy: false };
        this.scratch.set(ctor, s);
      }
      const slot = s;
      slot.busy = true;
      arr = slot.buf.length === a.length ? slot.buf : slot.buf.subarray(0, a.length);
      release = () => {
        slot.busy = false;
      };
    }
    scaleInto(arr, a, factor);
    return { arr, release };
  }

  private settled(): void {
    if (--this.inflight === 0 && this.drained) {
      this.drained();
      this.drained = null;
    }
  }

  protected override diagnose(c: CallSpec): string {
    const where = this.world.opts.dumpDir ? `their flight dumps in ${this.world.opts.dumpDir}` : 'their stderr lines';
    return (
      `rank ${this.ranks[this.rank]} waited ${c.timeoutMs} ms in ${c.op} #${c.seq} on group ${this.name} (world ranks ${this.ranks.join(',')}); ` +
      `some member did not enter or complete it. One ${this.world.name === 'ccl' ? 'oneCCL/' : ''}MPI process cannot see the others; ${where} say where each stood`
    );
  }

  protected override onTimeout(c: CallSpec): void {
    this.world.timedOut(`${c.op} #${c.seq} on group ${this.name}: ${this.diagnose(c)}`);
  }

  /**
   * MPI_Comm_split blocks the event loop until every member has called it, so the members first meet in a polled,
   * timed all_gather of (color, key): a member that never comes is a timeout with a flight entry, not a hang.
   */
  protected async splitImpl(color: number, key: number, name: string): Promise<Communicator> {
    if (color < 0) {
      throw new CollectiveError(
        'invalid',
        `split of ${this.name} into ${name}: color must be non-negative (got ${color})`,
        { group: this.name },
      );
    }
    const { members: expected } = await this.splitMembers(color, key, name);
    const handle = this.world.b.commSplit(this.handle, color, key);
    const info = this.world.b.commInfo(handle);
    const ranks = Array.from(info.worldRanks);
    if (expected.map((q) => this.ranks[q]).join(',') !== ranks.join(',')) {
      throw new Error(
        `split into ${name}: MPI formed group [${ranks.join(',')}], but (color, key) of the members give [${expected.map((q) => this.ranks[q]).join(',')}]`,
      );
    }
    return this.derive({
      world: this.world,
      handle,
      rank: info.rank,
      ranks,
      name,
      profile: this.profile,
      timeoutMs: this.timeoutMs,
      observer: this.observer,
    });
  }

  /** The communicator of a group just split off over MPI (the ccl transport adds its oneCCL communicator). */
  protected async derive(init: MpiCommInit): Promise<Communicator> {
    return new MpiCommunicator(init);
  }

  /** Frees the native communicator(s) once no call is in flight. */
  protected releaseNative(): void {
    if (this.handle !== 0) this.world.b.commFree(this.handle);
  }

  protected async freeImpl(): Promise<void> {
    // MPI_Comm_free with requests still pending on the communicator is erroneous; their own timeouts bound this.
    if (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    this.scratch.clear();
    this.releaseNative();
  }
}
