// The shared memory of one group on the threads transport: a SharedArrayBuffer holding a small Int32 header
// (poison word, per-rank phase counters, per-rank call descriptors) and one data slot per rank.
//
// Protocol (see channel.ts, collectives.ts): a collective is a sequence of *phases*. In phase p every rank writes
// into half p % 2 of its own slot, publishes `arrive[me] = p`, waits until every peer's `arrive` reaches p, reads
// what it needs from half p % 2 of the peers' slots and publishes `done[me] = p`. Slots are double-buffered: before
// writing phase p a rank waits only until every peer is done with phase p − 2 (the last user of that half), so it
// can fill the other half while slower peers still read the previous phase, instead of moving in lockstep. The
// call descriptors are double-buffered the same way. Counters only grow, so a wait is a plain "is peer q at phase
// ≥ k" test, and "who is missing" is the list of peers below k.
//
// Slots have a fixed size; larger calls are cut into rounds (chunks), so memory per group is bounded and no
// buffer has to be re-shared between threads mid-run.

import type { CollectiveOp } from '../communicator.ts';

const MAGIC = 0x4d4f4541; // "MOEA"

// Header words.
const H_MAGIC = 0;
const H_SIZE = 1;
const H_SLOT_BYTES = 2;
/** World rank + 1 of the member that abandoned the group (0: healthy). */
const H_POISON_RANK = 3;
const H_POISON_KIND = 4;
const H_COUNTERS = 16;

/** Fixed part of a descriptor; followed by `size` counts. */
const DESC_FIXED = 8;
const D_OP = 0;
const D_DTYPE = 1;
const D_SEQ = 2;
const D_NELEMS = 3;
const D_AUX = 4;
/** Registration id of the caller's send buffer when peers read it in place (buffers.ts); 0: data is in the slot. */
const D_BUF = 5;
/** Element offset of the send array in that buffer. */
const D_OFF = 6;

/** Why a group became unusable; the poison names the culprit's world rank (who timed out, died, mismatched). */
export const POISON_KINDS = ['none', 'timeout', 'failed', 'stopped', 'died', 'mismatch', 'finished'] as const;
export type PoisonKind = (typeof POISON_KINDS)[number];

export function describePoison(worldRank: number, kind: PoisonKind): string {
  switch (kind) {
    case 'timeout':
      return `world rank ${worldRank} timed out in this group and left it`;
    case 'mismatch':
      return `world rank ${worldRank} found a mismatched call (desync) in this group`;
    case 'stopped':
      return `world rank ${worldRank} was stopped`;
    case 'died':
      return `world rank ${worldRank} died (worker exited or was terminated)`;
    case 'finished':
      return `world rank ${worldRank} finished its program`;
    default:
      return `world rank ${worldRank} failed (its program threw)`;
  }
}

const OPS: readonly CollectiveOp[] = [
  'all_gather',
  'all_gather_v',
  'reduce_scatter',
  'all_reduce',
  'all_to_all_v',
  'broadcast',
  'barrier',
];
export const DTYPES = ['float32', 'float64', 'int32', 'bfloat16'] as const;
export type DType = (typeof DTYPES)[number];

export function opCode(op: CollectiveOp): number {
  return OPS.indexOf(op) + 1;
}
export function opName(code: number): CollectiveOp | 'none' {
  return OPS[code - 1] ?? 'none';
}

/** What a rank announces when it enters a call; peers check it to turn a desync into a clear error. */
export interface Descriptor {
  op: CollectiveOp | 'none';
  dtype: DType;
  seq: number;
  nelems: number;
  /** root (broadcast) or reduce-op code. */
  aux: number;
  /** Registration id of the send buffer peers read in place (0: this rank's data comes through its slot). */
  buf: number;
  /** Element offset of the send array in the registered buffer. */
  off: number;
  counts: Int32Array;
}

/** Everything needed to attach to an arena from another thread (structured-clonable). */
export interface ArenaHandle {
  id: string;
  sab: SharedArrayBuffer;
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

export function arenaBytes(size: number, slotBytes: number): number {
  return dataOffset(size) + size * slotBytes;
}

/** Counters, then two descriptor sets (one per slot half). */
function headerInts(size: number): number {
  return H_COUNTERS + 2 * size + 2 * size * (DESC_FIXED + size);
}

function dataOffset(size: number): number {
  return align(headerInts(size) * 4, 64);
}

export function createArena(id: string, size: number, slotBytes: number): ArenaHandle {
  if (!Number.isInteger(size) || size < 1) throw new Error(`arena ${id}: size ${size} is not a positive integer`);
  // At least 8 float64 per rank block in each half, so reduce_scatter and all_to_all_v (a half cut into `size`
  // blocks) progress; halves stay 64-byte aligned.
  const slot = align(Math.max(128 * size, slotBytes), 128);
  if (slot > 0x7fffffff) throw new Error(`arena ${id}: slot of ${slot} bytes is too large (max 2 GiB)`);
  const sab = new SharedArrayBuffer(arenaBytes(size, slot));
  const h = new Int32Array(sab, 0, headerInts(size));
  h[H_MAGIC] = MAGIC;
  h[H_SIZE] = size;
  h[H_SLOT_BYTES] = slot;
  return { id, sab };
}

/** A view on an arena: typed views on the header and slots, and the per-rank words of the protocol. */
export class Arena {
  readonly id: string;
  readonly sab: SharedArrayBuffer;
  readonly size: number;
  readonly slotBytes: number;
  /** Bytes of one half of a slot: what one phase can carry per rank. */
  readonly halfBytes: number;
  /** Header as Int32 for Atomics. */
  readonly h: Int32Array;
  private readonly dataOff: number;
  private readonly views = new Map<string, ArrayBufferView[]>();

  constructor(handle: ArenaHandle) {
    this.id = handle.id;
    this.sab = handle.sab;
    const probe = new Int32Array(handle.sab, 0, H_COUNTERS);
    if (probe[H_MAGIC] !== MAGIC) throw new Error(`arena ${handle.id}: not a moe-actors arena (bad magic)`);
    this.size = probe[H_SIZE]!;
    this.slotBytes = probe[H_SLOT_BYTES]!;
    this.halfBytes = this.slotBytes / 2;
    this.h = new Int32Array(handle.sab, 0, headerInts(this.size));
    this.dataOff = dataOffset(this.size);
  }

  arriveIndex(q: number): number {
    return H_COUNTERS + q;
  }
  doneIndex(q: number): number {
    return H_COUNTERS + this.size + q;
  }
  arrive(q: number): number {
    return Atomics.load(this.h, this.arriveIndex(q));
  }
  done(q: number): number {
    return Atomics.load(this.h, this.doneIndex(q));
  }
  publishArrive(q: number, phase: number): void {
    Atomics.store(this.h, this.arriveIndex(q), phase);
    Atomics.notify(this.h, this.arriveIndex(q));
  }
  publishDone(q: number, phase: number): void {
    Atomics.store(this.h, this.doneIndex(q), phase);
    Atomics.notify(this.h, this.doneIndex(q));
  }

  /** Wakes every waiter on this arena (poison, peer death, stop): they re-check their conditions. */
  wakeAll(): void {
    for (let q = 0; q < this.size; q++) {
      Atomics.notify(this.h, this.arriveIndex(q));
      Atomics.notify(this.h, this.doneIndex(q));
    }
  }

  /** Marks the group unusable because of `culprit` (a world rank); the first poison wins, so every member reports
   * the failure that started it. */
  poison(culprit: number, kind: PoisonKind): void {
    if (Atomics.compareExchange(this.h, H_POISON_RANK, 0, culprit + 1) === 0) {
      Atomics.store(this.h, H_POISON_KIND, POISON_KINDS.indexOf(kind));
    }
    this.wakeAll();
  }

  poisoned(): { worldRank: number; kind: PoisonKind } | null {
    const r = Atomics.load(this.h, H_POISON_RANK);
    if (r === 0) return null;
    return { worldRank: r - 1, kind: POISON_KINDS[Atomics.load(this.h, H_POISON_KIND)] ?? 'failed' };
  }

  private descBase(q: number, half: number): number {
    return H_COUNTERS + 2 * this.size + (half * this.size + q) * (DESC_FIXED + this.size);
  }

  writeDescriptor(
    q: number,
    half: number,
    d: Omit<Descriptor, 'counts' | 'buf' | 'off'> & { buf?: number; off?: number },
    counts?: readonly number[],
  ): void {
    const b = this.descBase(q, half);
    const h = this.h;
    h[b + D_OP] = d.op === 'none' ? 0 : opCode(d.op);
    h[b + D_DTYPE] = DTYPES.indexOf(d.dtype);
    h[b + D_SEQ] = d.seq;
    h[b + D_NELEMS] = d.nelems;
    h[b + D_AUX] = d.aux;
    h[b + D_BUF] = d.buf ?? 0;
    h[b + D_OFF] = d.off ?? 0;
    for (let i = 0; i < this.size; i++) h[b + DESC_FIXED + i] = counts ? counts[i]! : 0;
  }

  readDescriptor(q: number, half: number): Descriptor {
    const b = this.descBase(q, half);
    const h = this.h;
    return {
      op: opName(h[b + D_OP]!),
      dtype: DTYPES[h[b + D_DTYPE]!] ?? 'float32',
      seq: h[b + D_SEQ]!,
      nelems: h[b + D_NELEMS]!,
      aux: h[b + D_AUX]!,
      buf: h[b + D_BUF]!,
      off: h[b + D_OFF]!,
      counts: h.subarray(b + DESC_FIXED, b + DESC_FIXED + this.size),
    };
  }

  /** Count `q` of the descriptor of rank `p` (a2a: how much p sends to q). */
  descriptorCount(p: number, half: number, q: number): number {
    return this.h[this.descBase(p, half) + DESC_FIXED + q]!;
  }

  /** The most recent descriptor rank q wrote (for reports about a peer that stopped). */
  lastDescriptor(q: number): Descriptor {
    const a = this.readDescriptor(q, 0);
    const b = this.readDescriptor(q, 1);
    return b.seq > a.seq ? b : a;
  }

  /** One half of rank q's slot as an array of the given element type (views are cached). */
  slot<T extends Float32Array | Float64Array | Int32Array | Uint16Array>(
    q: number,
    half: number,
    ctor: { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number; name: string },
  ): T {
    let vs = this.views.get(ctor.name);
    if (!vs) {
      vs = [];
      for (let i = 0; i < 2 * this.size; i++) {
        vs.push(
          new ctor(
            this.sab,
            this.dataOff + (i >> 1) * this.slotBytes + (i & 1) * this.halfBytes,
            Math.floor(this.halfBytes / ctor.BYTES_PER_ELEMENT),
          ),
        );
      }
      this.views.set(ctor.name, vs);
    }
    return vs[2 * q + half] as T;
  }
}
