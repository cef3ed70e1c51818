// The collectives of the threads transport, written as rounds of the phase protocol (channel.ts) over fixed-size
// slots (arena.ts). Each rank copies its contribution into its own slot once and reads peers' slots straight into
// the caller's arrays; its own part goes from send to recv directly. Reductions read every rank's contribution in
// rank order (reduce.ts). The first phase of every call carries a descriptor (op, dtype, seq, sizes) that peers
// check, so a desync becomes a 'mismatch' error naming both calls instead of silently mixed data.

import type { CallSpec } from '../base-communicator.ts';
import { dtypeOf } from '../base-communicator.ts';
import type { CommArray } from '../communicator.ts';
import { CollectiveError } from '../errors.ts';
import type { Descriptor } from './arena.ts';
import type { GroupChannel, Lent } from './channel.ts';
import { copyInto } from './copy.ts';
import { accumulate, divideInPlace, reduceCode, scaleInto } from './reduce.ts';

type Ctor = { new (b: ArrayBufferLike, o: number, n: number): CommArray; BYTES_PER_ELEMENT: number; name: string };

const ctorOf = (a: CommArray) => a.constructor as unknown as Ctor;
const prefix = (xs: readonly number[]) => {
  const out = new Array<number>(xs.length);
  let acc = 0;
  for (let i = 0; i < xs.length; i++) {
    out[i] = acc;
    acc += xs[i]!;
  }
  return out;
};
const clamp = (v: number, hi: number) => Math.max(0, Math.min(hi, v));

export async function runCollective(ch: GroupChannel, c: CallSpec): Promise<void> {
  switch (c.op) {
    case 'all_gather':
      return allGather(ch, c, c.send!, c.recv!);
    case 'all_gather_v':
      return allGatherV(ch, c, c.send!, c.recv!, c.counts!);
    case 'reduce_scatter':
      return reduceScatter(ch, c, c.send!, c.recv!);
    case 'all_reduce':
      return allReduce(ch, c, c.buf!);
    case 'all_to_all_v':
      return allToAllV(ch, c, c.send!, c.sendCounts!, c.recv!, c.recvCounts!);
    case 'broadcast':
      return broadcast(ch, c, c.buf!, c.root!);
    case 'barrier':
      return barrier(ch, c);
  }
}

function describe(d: Pick<Descriptor, 'op' | 'seq' | 'dtype' | 'nelems'>): string {
  return `${d.op} #${d.seq} (${d.dtype}, ${d.nelems} elements)`;
}

/** Compares every peer's descriptor with mine; `extra` adds op-specific checks. Poisons the group on mismatch. */
function checkPeers(ch: GroupChannel, c: CallSpec, mine: Descriptor, extra?: (q: number, d: Descriptor) => string | null): void {
  for (let q = 0; q < ch.size; q++) {
    if (q === ch.me) continue;
    const d = ch.arena.readDescriptor(q, ch.readHalf);
    let why: string | null = null;
    if (d.op !== mine.op || d.seq !== mine.seq || d.dtype !== mine.dtype) why = `is in ${describe(d)}`;
    else if (mine.nelems >= 0 && d.nelems !== mine.nelems) why = `passed ${d.nelems} elements`;
    else if (d.aux !== mine.aux) why = mine.op === 'broadcast' ? `uses root ${d.aux}` : `uses a different reduce op`;
    else if (extra) why = extra(q, d);
    if (why) {
      ch.arena.poison(ch.worldRanks[ch.me]!, 'mismatch');
      throw new CollectiveError(
        'mismatch',
        `group ${ch.group}: rank ${ch.me} (world ${ch.worldRanks[ch.me]}) is in ${describe(mine)} but rank ${q} (world ${ch.worldRanks[q]}) ${why}`,
        { group: ch.group, op: c.op, seq: c.seq, rank: ch.me },
      );
    }
  }
}

/** Opens a call: my descriptor is published with the first phase's data. nelems < 0: sizes are checked by `extra`. */
function descriptor(
  ch: GroupChannel,
  c: CallSpec,
  a: CommArray | undefined,
  nelems: number,
  aux: number,
  counts?: readonly number[],
  lent?: Lent | null,
): Descriptor {
  const d: Descriptor = {
    op: c.op,
    seq: c.seq,
    dtype: a ? dtypeOf(a) : 'float32',
    nelems,
    aux,
    buf: lent?.buf ?? 0,
    off: lent?.off ?? 0,
    counts: new Int32Array(counts ?? []),
  };
  ch.arena.writeDescriptor(ch.me, ch.writeHalf, d, counts);
  return d;
}

/** Copies `src` into `dst` at `at`, unless it is already there (in-place all_gather: send is recv's own block). */
function place(dst: CommArray, src: CommArray, at: number): void {
  if (src.buffer === dst.buffer && src.byteOffset === dst.byteOffset + at * dst.BYTES_PER_ELEMENT) return;
  copyInto(dst, at, src, true);
}

/**
 * all_gather and all_gather_v (counts[q] elements from rank q, placed at displ[q]). A rank whose send array is
 * lent (on a SharedArrayBuffer, see buffers.ts) publishes only its descriptor, and peers copy its whole block
 * straight from its array in the first phase; the others stage their block through their slot in rounds of one
 * half-slot. Every member sees every descriptor after the first phase, so all agree on the number of rounds: one
 * if every block is lent, else as many as the largest staged block needs. A lender returns only after every peer
 * has finished reading (its caller may overwrite the array as soon as the call resolves).
 */
async function gather(ch: GroupChannel, c: CallSpec, send: CommArray, recv: CommArray, counts: readonly number[] | null): Promise<void> {
  const P = ch.size;
  const me = ch.me;
  const ctor = ctorOf(send);
  const m = Math.floor(ch.arena.halfBytes / ctor.BYTES_PER_ELEMENT);
  const n = send.length;
  const cnt = (q: number) => (counts ? counts[q]! : n);
  const at = counts ? prefix(counts) : null;
  const displ = (q: number) => (at ? at[q]! : q * n);
  const lent = ch.lend(send);
  const own = () => place(recv, send, displ(me));
  let rounds = 1;
  let peers: Descriptor[] = [];
  for (let t = 0; t < rounds; t++) {
    const lo = t * m;
    await ch.beginWrite();
    const d = t === 0 ? descriptor(ch, c, send, counts ? -1 : n, 0, counts ?? undefined, lent) : null;
    if (!lent) {
      const len = clamp(n - lo, m);
      if (len > 0) copyInto(ch.out(ctor), 0, send.subarray(lo, lo + len));
    }
    await ch.arrive(t === 0 ? own : undefined);
    if (d) {
      checkPeers(
        ch,
        c,
        d,
        counts
          ? (_q, pd) => {
              for (let i = 0; i < P; i++) if (pd.counts[i] !== counts[i]) return `passed counts [${[...pd.counts].join(',')}] (mine: [${counts.join(',')}])`;
              return null;
            }
          : undefined,
      );
      peers = [];
      let staged = lent ? 0 : n;
      for (let q = 0; q < P; q++) {
        const pd = q === me ? d : ch.arena.readDescriptor(q, ch.readHalf);
        peers.push(pd);
        if (pd.buf === 0) staged = Math.max(staged, cnt(q));
      }
      rounds = Math.max(1, Math.ceil(staged / m));
      for (let q = 0; q < P; q++) {
        if (q === me || peers[q]!.buf === 0 || cnt(q) === 0) continue;
        copyInto(recv, displ(q), await ch.peerArray(q, peers[q]!, ctor, cnt(q)), true);
      }
    }
    for (let q = 0; q < P; q++) {
      if (q === me || peers[q]!.buf !== 0) continue;
      const len = clamp(cnt(q) - lo, m);
      if (len > 0) copyInto(recv, displ(q) + lo, ch.in(q, ctor).subarray(0, len), true);
    }
    ch.finishRead();
  }
  if (lent) await ch.waitReaders();
}

async function allGather(ch: GroupChannel, c: CallSpec, send: CommArray, recv: CommArray): Promise<void> {
  return gather(ch, c, send, recv, null);
}

async function allGatherV(ch: GroupChannel, c: CallSpec, send: CommArray, recv: CommArray, counts: readonly number[]): Promise<void> {
  return gather(ch, c, send, recv, counts);
}

async function reduceScatter(ch: GroupChannel, c: CallSpec, send: CommArray, recv: CommArray): Promise<void> {
  const P = ch.size;
  const n = recv.length;
  const ctor = ctorOf(send);
  const m = Math.floor(ch.arena.halfBytes / (P * ctor.BYTES_PER_ELEMENT));
  const rounds = Math.max(1, Math.ceil(n / m));
  const red = c.reduce!;
  for (let t = 0; t < rounds; t++) {
    const lo = t * m;
    const len = Math.min(m, n - lo);
    await ch.beginWrite();
    const d = t === 0 ? descriptor(ch, c, send, n, reduceCode(red)) : null;
    const mine = ch.out(ctor);
    for (let b = 0; b < P; b++) {
      const src = send.subarray(b * n + lo, b * n + lo + len);
      const dst = mine.subarray(b * m, b * m + len);
      if (red.op === 'premul_sum') scaleInto(dst, src, red.factor);
      else dst.set(src);
    }
    await ch.arrive();
    if (d) checkPeers(ch, c, d);
    const out = recv.subarray(lo, lo + len);
    const at = ch.me * m;
    out.set(ch.in(0, ctor).subarray(at, at + len));
    for (let q = 1; q < P; q++) accumulate(out, ch.in(q, ctor).subarray(at, at + len), red.op);
    if (red.op === 'avg') divideInPlace(out, P);
    ch.finishRead();
  }
}

/**
 * Two phases per round: (A) everyone publishes its chunk; rank r reduces block r of the chunk over all ranks;
 * (B) rank r publishes its reduced block and everyone copies block q from rank q. Each rank moves about 2·n bytes
 * in and out whatever the group size, instead of P·n for "everyone reduces everything".
 */
async function allReduce(ch: GroupChannel, c: CallSpec, buf: CommArray): Promise<void> {
  const P = ch.size;
  const n = buf.length;
  const ctor = ctorOf(buf);
  const m = Math.floor(ch.arena.halfBytes / ctor.BYTES_PER_ELEMENT);
  const rounds = Math.max(1, Math.ceil(n / m));
  const red = c.reduce!;
  for (let t = 0; t < rounds; t++) {
    const lo = t * m;
    const L = Math.min(m, n - lo);
    const blk = (b: number) => Math.floor((b * L) / P);
    await ch.beginWrite();
    const d = t === 0 ? descriptor(ch, c, buf, n, reduceCode(red)) : null;
    const chunk = buf.subarray(lo, lo + L);
    if (red.op === 'premul_sum') scaleInto(ch.out(ctor), chunk, red.factor);
    else ch.out(ctor).set(chunk, 0);
    await ch.arrive();
    if (d) checkPeers(ch, c, d);
    const a = blk(ch.me);
    const b = blk(ch.me + 1);
    // buf's chunk is already in my slot, so its block `me` is free to serve as the accumulator.
    const acc = buf.subarray(lo + a, lo + b);
    acc.set(ch.in(0, ctor).subarray(a, b));
    for (let q = 1; q < P; q++) accumulate(acc, ch.in(q, ctor).subarray(a, b), red.op);
    if (red.op === 'avg') divideInPlace(acc, P);
    // Phase B publishes in the other half. Every peer has arrived at phase A, so every peer has finished reading
    // the phase before it — the last user of that half — and no wait is needed.
    ch.out(ctor).set(acc, a);
    await ch.arrive();
    for (let q = 0; q < P; q++) {
      if (q === ch.me) continue;
      const qa = blk(q);
      buf.set(ch.in(q, ctor).subarray(qa, blk(q + 1)), lo + qa);
    }
    ch.finishRead();
  }
}

async function allToAllV(
  ch: GroupChannel,
  c: CallSpec,
  send: CommArray,
  sendCounts: readonly number[],
  recv: CommArray,
  recvCounts: readonly number[],
): Promise<void> {
  const P = ch.size;
  const me = ch.me;
  const ctor = ctorOf(send);
  const m = Math.floor(ch.arena.halfBytes / (P * ctor.BYTES_PER_ELEMENT));
  const sd = prefix(sendCounts);
  const rd = prefix(recvCounts);
  if (sendCounts[me] !== recvCounts[me]) {
    throw new CollectiveError('invalid', `all_to_all_v on ${ch.group}: rank ${me} sends ${sendCounts[me]} elements to itself but expects ${recvCounts[me]}`, {
      group: ch.group,
      op: c.op,
      seq: c.seq,
      rank: me,
    });
  }
  const own = () => recv.set(send.subarray(sd[me]!, sd[me]! + sendCounts[me]!), rd[me]!);
  let rounds = 1;
  for (let t = 0; t < rounds; t++) {
    const lo = t * m;
    await ch.beginWrite();
    const d = t === 0 ? descriptor(ch, c, send, -1, 0, sendCounts) : null;
    const mine = ch.out(ctor);
    for (let j = 0; j < P; j++) {
      if (j === me) continue;
      const len = clamp(sendCounts[j]! - lo, m);
      if (len > 0) mine.set(send.subarray(sd[j]! + lo, sd[j]! + lo + len), j * m);
    }
    await ch.arrive(t === 0 ? own : undefined);
    if (d) {
      checkPeers(ch, c, d, (q, pd) =>
        pd.counts[me] !== recvCounts[q] ? `sends ${pd.counts[me]} elements to rank ${me}, which expects ${recvCounts[q]} from it` : null,
      );
      let most = 0;
      for (let p = 0; p < P; p++) for (let q = 0; q < P; q++) if (p !== q) most = Math.max(most, ch.arena.descriptorCount(p, ch.readHalf, q));
      rounds = Math.max(1, Math.ceil(most / m));
    }
    for (let q = 0; q < P; q++) {
      if (q === me) continue;
      const len = clamp(recvCounts[q]! - lo, m);
      if (len > 0) recv.set(ch.in(q, ctor).subarray(me * m, me * m + len), rd[q]! + lo);
    }
    ch.finishRead();
  }
}

async function broadcast(ch: GroupChannel, c: CallSpec, buf: CommArray, root: number): Promise<void> {
  const n = buf.length;
  const ctor = ctorOf(buf);
  const m = Math.floor(ch.arena.halfBytes / ctor.BYTES_PER_ELEMENT);
  const rounds = Math.max(1, Math.ceil(n / m));
  const isRoot = ch.me === root;
  for (let t = 0; t < rounds; t++) {
    const lo = t * m;
    const len = Math.min(m, n - lo);
    await ch.beginWrite();
    const d = t === 0 ? descriptor(ch, c, buf, n, root) : null;
    if (isRoot) ch.out(ctor).set(buf.subarray(lo, lo + len), 0);
    await ch.arrive();
    if (d) checkPeers(ch, c, d);
    if (!isRoot) buf.set(ch.in(root, ctor).subarray(0, len), lo);
    ch.finishRead();
  }
}

async function barrier(ch: GroupChannel, c: CallSpec): Promise<void> {
  await ch.beginWrite();
  const d = descriptor(ch, c, undefined, 0, 0);
  await ch.arrive();
  checkPeers(ch, c, d);
  ch.finishRead();
}
