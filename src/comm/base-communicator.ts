// What every transport shares: argument checks, capability checks against the profile, per-group sequence
// numbers, flight-recorder entries, timeouts and byte counters. A transport implements only `execute` (move the
// bytes of one checked call), `splitImpl` and `freeImpl`; so an op the profile forbids, a bad length or a timeout
// behaves the same on inproc, threads and mpi.

import { checkCall, narrow, type Capabilities, type Profile } from './capabilities.ts';
import type {
  ByteCounters,
  CallOptions,
  CallSite,
  CollectiveOp,
  CommArray,
  CommObserver,
  Communicator,
  ReduceOp,
} from './communicator.ts';
import { sum } from './counts.ts';
import { CollectiveError } from './errors.ts';
import type { FlightEntry, FlightRecorder } from './flight-recorder.ts';
import { reduceDefinedOn } from './reduce.ts';

/** One validated call, handed to the transport. Arrays are the caller's own (no copies). */
export interface CallSpec {
  op: CollectiveOp;
  seq: number;
  entry: FlightEntry;
  timeoutMs: number;
  send?: CommArray;
  recv?: CommArray;
  /** all_reduce / broadcast: in-place buffer. */
  buf?: CommArray;
  /** all_gather_v: elements per rank. */
  counts?: readonly number[];
  sendCounts?: readonly number[];
  recvCounts?: readonly number[];
  root?: number;
  reduce?: ReduceOp;
}

export type { CommObserver } from './communicator.ts';

export interface BaseInit {
  rank: number;
  size: number;
  ranks: readonly number[];
  name: string;
  transport: string;
  profile: Profile;
  transportCaps: Capabilities;
  recorder: FlightRecorder;
  timeoutMs: number;
  /** Whether the group's ranks span more than one node (premul_sum 'single-node' check). */
  multiNode: boolean;
  observer?: CommObserver;
}

export function dtypeOf(a: CommArray): FlightEntry['dtype'] {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Uint16Array) return 'bfloat16';
  return 'int32';
}

export function reduceName(r: ReduceOp): string {
  return r.op === 'premul_sum' ? `premul_sum(${r.factor})` : r.op;
}

const undefinedReduce = (op: ReduceOp, a: CommArray) =>
  a instanceof Uint16Array
    ? `ReduceOp ${op.op} is not defined on bf16 (only sum, accumulated in float32); scale before converting, or reduce in float32`
    : `ReduceOp ${op.op} is defined on float32/float64 only, got ${a.constructor.name}; use sum and divide, or convert to float`;

export abstract class BaseCommunicator implements Communicator {
  readonly rank: number;
  readonly size: number;
  readonly ranks: readonly number[];
  readonly name: string;
  readonly backend: string;
  readonly capabilities: Capabilities;
  readonly bytes: ByteCounters = { sent: 0, received: 0, calls: 0 };
  readonly recorder: FlightRecorder;
  readonly profile: Profile;
  readonly multiNode: boolean;
  timeoutMs: number;
  /** The transport's observer (inproc world, tests), which groups split from this one inherit. */
  protected readonly observer: CommObserver | undefined;
  /** The transport's observer first, then those added by observe(). */
  private observers: CommObserver[];
  protected seq = 0;
  protected freed = false;
  /** Groups split from this one, so setDefaultTimeout reaches them. */
  private readonly children: Communicator[] = [];

  constructor(init: BaseInit) {
    if (init.ranks.length !== init.size) throw new Error(`communicator ${init.name}: ranks list does not match size`);
    this.rank = init.rank;
    this.size = init.size;
    this.ranks = init.ranks;
    this.name = init.name;
    this.profile = init.profile;
    this.backend = `${init.transport}/${init.profile.name}`;
    this.capabilities = narrow(init.transportCaps, init.profile.caps);
    this.recorder = init.recorder;
    this.timeoutMs = init.timeoutMs;
    this.multiNode = init.multiNode;
    this.observer = init.observer;
    this.observers = init.observer ? [init.observer] : [];
  }

  get peerReadsInPlace(): boolean {
    return false;
  }

  observe(observer: CommObserver): () => void {
    this.observers = [...this.observers, observer];
    return () => {
      this.observers = this.observers.filter((o) => o !== observer);
    };
  }

  private notifyStart(entry: FlightEntry, site: CallSite | undefined): void {
    for (const o of this.observers) o.onStart?.(this, entry, site);
  }

  private notifyEnd(entry: FlightEntry, site: CallSite | undefined): void {
    for (const o of this.observers) o.onEnd?.(this, entry, site);
  }

  /** Moves the data of one validated call. Resolve when this rank's part is complete. */
  protected abstract execute(call: CallSpec): Promise<void>;
  protected abstract splitImpl(color: number, key: number, name: string): Promise<Communicator>;
  protected abstract freeImpl(): Promise<void>;
  /**
   * What this rank can say about a call that timed out. Transports that see other ranks (inproc, the threads
   * launcher) say who is missing; the default reports this rank's own view.
   */
  protected diagnose(call: CallSpec): string {
    return `rank ${this.ranks[this.rank]} waited ${call.timeoutMs} ms in ${call.op} #${call.seq} on group ${this.name} (ranks ${this.ranks.join(',')}); the other members did not complete it`;
  }

  /**
   * For transports that split by exchanging (color, key) over this group: the group ranks that chose `color`, in
   * MPI_Comm_split's order (key, then rank). `seq` is the exchange's sequence number, the same on every member, so
   * it can name the split.
   */
  protected async splitMembers(color: number, key: number, name: string): Promise<{ members: number[]; seq: number }> {
    const all = new Int32Array(2 * this.size);
    const exchanged = this.allGather(new Int32Array([color, key]), all, { tag: `split:${name}` });
    // Read before awaiting: by then this rank may have issued further calls.
    const seq = this.seq;
    await exchanged;
    const members: number[] = [];
    for (let q = 0; q < this.size; q++) if (all[2 * q] === color) members.push(q);
    members.sort((a, b) => all[2 * a + 1]! - all[2 * b + 1]! || a - b);
    return { members, seq };
  }

  allGather<T extends CommArray>(send: T, recv: T, opts?: CallOptions): Promise<void> {
    if (send.constructor !== recv.constructor) return this.typeMismatch('all_gather', send, recv);
    if (recv.length !== send.length * this.size) {
      return this.invalid(
        'all_gather',
        `recv has ${recv.length} elements, needs size·send = ${this.size}·${send.length}`,
      );
    }
    return this.call(
      { op: 'all_gather', send, recv },
      opts,
      send.length,
      recv.length,
      send.byteLength,
      recv.byteLength,
    );
  }

  allGatherV<T extends CommArray>(send: T, recv: T, counts: readonly number[], opts?: CallOptions): Promise<void> {
    if (send.constructor !== recv.constructor) return this.typeMismatch('all_gather_v', send, recv);
    if (counts.length !== this.size)
      return this.invalid('all_gather_v', `counts has ${counts.length} entries, group size is ${this.size}`);
    if (counts[this.rank] !== send.length) {
      return this.invalid(
        'all_gather_v',
        `counts[${this.rank}] = ${counts[this.rank]} but send has ${send.length} elements`,
      );
    }
    const total = sum(counts);
    if (recv.length !== total)
      return this.invalid('all_gather_v', `recv has ${recv.length} elements, counts sum to ${total}`);
    const bpe = send.BYTES_PER_ELEMENT;
    return this.call(
      { op: 'all_gather_v', send, recv, counts },
      opts,
      send.length,
      recv.length,
      send.byteLength,
      recv.length * bpe,
      counts,
      counts,
    );
  }

  reduceScatter<T extends CommArray>(send: T, recv: T, op: ReduceOp, opts?: CallOptions): Promise<void> {
    if (send.constructor !== recv.constructor) return this.typeMismatch('reduce_scatter', send, recv);
    if (send.length !== recv.length * this.size) {
      return this.invalid(
        'reduce_scatter',
        `send has ${send.length} elements, needs size·recv = ${this.size}·${recv.length}`,
      );
    }
    if (!reduceDefinedOn(op, send)) return this.invalid('reduce_scatter', undefinedReduce(op, send));
    return this.call(
      { op: 'reduce_scatter', send, recv, reduce: op },
      opts,
      send.length,
      recv.length,
      send.byteLength,
      recv.byteLength,
    );
  }

  allReduce<T extends CommArray>(buf: T, op: ReduceOp, opts?: CallOptions): Promise<void> {
    if (buf instanceof Uint16Array)
      return this.invalid(
        'all_reduce',
        'bf16 reductions are reduce_scatter only (FSDP gradients); all_reduce needs a float32/float64 array',
      );
    if (!reduceDefinedOn(op, buf)) return this.invalid('all_reduce', undefinedReduce(op, buf));
    return this.call(
      { op: 'all_reduce', buf, reduce: op },
      opts,
      buf.length,
      buf.length,
      buf.byteLength,
      buf.byteLength,
    );
  }

  allToAllV<T extends CommArray>(
    send: T,
    sendCounts: readonly number[],
    recv: T,
    recvCounts: readonly number[],
    opts?: CallOptions,
  ): Promise<void> {
    if (send.constructor !== recv.constructor) return this.typeMismatch('all_to_all_v', send, recv);
    if (sendCounts.length !== this.size || recvCounts.length !== this.size) {
      return this.invalid('all_to_all_v', `sendCounts/recvCounts need ${this.size} entries`);
    }
    const sent = sum(sendCounts);
    const received = sum(recvCounts);
    if (sent > send.length)
      return this.invalid('all_to_all_v', `sendCounts sum to ${sent} but send has ${send.length} elements`);
    if (received > recv.length)
      return this.invalid('all_to_all_v', `recvCounts sum to ${received} but recv has ${recv.length} elements`);
    const bpe = send.BYTES_PER_ELEMENT;
    return this.call(
      { op: 'all_to_all_v', send, recv, sendCounts, recvCounts },
      opts,
      sent,
      received,
      sent * bpe,
      received * bpe,
      sendCounts,
      recvCounts,
    );
  }

  broadcast<T extends CommArray>(buf: T, root: number, opts?: CallOptions): Promise<void> {
    if (!Number.isInteger(root) || root < 0 || root >= this.size)
      return this.invalid('broadcast', `root ${root} is not a rank of the group`);
    const mine = this.rank === root;
    return this.call(
      { op: 'broadcast', buf, root },
      opts,
      buf.length,
      buf.length,
      mine ? buf.byteLength : 0,
      mine ? 0 : buf.byteLength,
    );
  }

  barrier(opts?: CallOptions): Promise<void> {
    return this.call({ op: 'barrier' }, opts, 0, 0, 0, 0);
  }

  async split(color: number, key: number, name: string): Promise<Communicator> {
    if (this.freed)
      return Promise.reject(new CollectiveError('freed', `communicator ${this.name} was freed`, { group: this.name }));
    if (!this.capabilities.split)
      return Promise.reject(new CollectiveError('unsupported', `${this.backend} cannot split communicators`));
    if (!Number.isInteger(color) || !Number.isInteger(key)) {
      return Promise.reject(
        new CollectiveError(
          'invalid',
          `split of ${this.name} into "${name}": color ${color} and key ${key} must be integers`,
          { group: this.name },
        ),
      );
    }
    // split is collective over this group, so a missing member would otherwise block it forever.
    const timeoutMs = this.timeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const msg =
          `timeout after ${timeoutMs} ms in split of group ${this.name} into "${name}" (rank ${this.ranks[this.rank]}, color ${color}, key ${key}): ` +
          `not every member of ${this.name} (ranks ${this.ranks.join(',')}) called split`;
        reject(new CollectiveError('timeout', msg, { group: this.name, rank: this.ranks[this.rank] }));
      }, timeoutMs);
      timer.unref?.();
    });
    try {
      const child = await Promise.race([this.splitImpl(color, key, name), timeout]);
      // A transport may build the child from its world's settings; it takes this group's current default.
      child.setDefaultTimeout(this.timeoutMs);
      this.children.push(child);
      return child;
    } finally {
      clearTimeout(timer);
    }
  }

  setDefaultTimeout(timeoutMs: number): void {
    if (!(timeoutMs > 0 && Number.isFinite(timeoutMs)))
      throw new Error(`communicator ${this.name}: a timeout must be a positive number of ms (got ${timeoutMs})`);
    this.timeoutMs = timeoutMs;
    for (const c of this.children) c.setDefaultTimeout(timeoutMs);
  }

  async free(): Promise<void> {
    if (this.freed) return;
    this.freed = true;
    await this.freeImpl();
  }

  private typeMismatch(op: CollectiveOp, a: CommArray, b: CommArray): Promise<never> {
    return this.invalid(op, `send is ${a.constructor.name}, recv is ${b.constructor.name}`);
  }

  private invalid(op: CollectiveOp, why: string): Promise<never> {
    return Promise.reject(
      new CollectiveError('invalid', `${op} on ${this.name}: ${why}`, {
        group: this.name,
        op,
        rank: this.ranks[this.rank],
      }),
    );
  }

  private call(
    partial: Omit<CallSpec, 'seq' | 'entry' | 'timeoutMs'>,
    opts: CallOptions | undefined,
    inNelems: number,
    outNelems: number,
    bytesIn: number,
    bytesOut: number,
    inSplits?: readonly number[],
    outSplits?: readonly number[],
  ): Promise<void> {
    const op = partial.op;
    if (this.freed)
      return Promise.reject(
        new CollectiveError('freed', `${op} on ${this.name}: communicator was freed`, { group: this.name, op }),
      );
    const equalCounts =
      partial.sendCounts && partial.recvCounts
        ? partial.sendCounts.every((c) => c === partial.sendCounts![0]) &&
          partial.recvCounts.every((c) => c === partial.sendCounts![0])
        : undefined;
    const check = checkCall(this.capabilities, op, partial.reduce, { equalCounts, multiNode: this.multiNode });
    if (!check.ok) {
      return Promise.reject(
        new CollectiveError(
          'unsupported',
          `${op} on group ${this.name} (rank ${this.ranks[this.rank]}): ${check.reason} by backend ${this.backend}. Instead: ${check.alternative}.`,
          { group: this.name, op, rank: this.ranks[this.rank] },
        ),
      );
    }
    const seq = ++this.seq;
    const timeoutMs = opts?.timeoutMs ?? this.timeoutMs;
    const arr = partial.send ?? partial.buf;
    const entry = this.recorder.schedule({
      group: this.name,
      groupRanks: this.ranks,
      seq,
      op,
      reduceOp: partial.reduce ? reduceName(partial.reduce) : undefined,
      tag: opts?.tag ?? null,
      dtype: arr ? dtypeOf(arr) : 'float32',
      inNelems,
      outNelems,
      inSplits,
      outSplits,
      root: partial.root,
      timeoutMs,
    });
    // `partial` is the fresh literal each public method built; completing it in place avoids an object spread
    // (~2 µs in V8 here, on every call).
    const spec = partial as CallSpec;
    spec.seq = seq;
    spec.entry = entry;
    spec.timeoutMs = timeoutMs;
    this.recorder.start(entry);
    this.bytes.calls++;
    this.bytes.sent += bytesIn;
    this.bytes.received += bytesOut;
    const site = opts?.site;
    this.notifyStart(entry, site);

    const done = new Promise<void>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        const report = this.diagnose(spec);
        const msg = `timeout after ${timeoutMs} ms in ${op} #${seq} on group ${this.name}: ${report}`;
        this.recorder.fail(entry, msg);
        this.notifyEnd(entry, site);
        this.onTimeout(spec);
        reject(new CollectiveError('timeout', msg, { group: this.name, op, seq, rank: this.ranks[this.rank], report }));
      }, timeoutMs);
      // A pending timer must not keep a finished process alive, nor may a stuck collective keep it from exiting.
      timer.unref?.();
      this.execute(spec).then(
        () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this.recorder.complete(entry);
          this.notifyEnd(entry, site);
          resolve();
        },
        (err: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const e =
            err instanceof CollectiveError
              ? err
              : new CollectiveError(
                  'aborted',
                  `${op} #${seq} on ${this.name} failed: ${(err as Error)?.message ?? err}`,
                  { group: this.name, op, seq },
                );
          this.recorder.fail(entry, e.message);
          this.notifyEnd(entry, site);
          reject(e);
        },
      );
    });
    // A rank with several collectives in flight stops at the first failure; the others reject too, and must not
    // crash the process as unhandled rejections (inproc runs every rank in one process). Awaiting still throws.
    done.catch(() => {});
    return done;
  }

  /** Called after a timeout was reported; transports release what the call holds (or abort the process). */
  protected onTimeout(_call: CallSpec): void {}
}
