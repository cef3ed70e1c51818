// The collectives of the threads transport, written as rounds of the phase protocol (channel.ts) over fixed-size
// slots (arena.ts). Each rank copies its contribution into its own slot once and reads peers' slots straight into
// the caller's arrays; its own part goes from send to recv directly. Reductions read every rank's contribution in
// rank order (reduce.ts). The first phase of every call carries a descriptor (op, dtype, seq, sizes) that peers
// check, so a desync becomes a 'mismatch' error naming both calls instead of silently mixed data.

import type { CallSpec } from '../base-communicator.ts';
import { dtypeOf } from '../base-communicator.ts';
import type { CommArray } from '../communicator.ts';
import { prefix, sum } from '../counts.ts';
import { CollectiveError } from '../errors.ts';
import { divideInPlace, scaleInto } from '../reduce.ts';
import type { Descriptor } from './arena.ts';
import type { GroupChannel, Lent } from './channel.ts';
import { copyInto } from './copy.ts';
import { reduceCode, reduceInto } from './reduce.ts';

type Ctor = { new (b: ArrayBufferLike, o: number, n: number): CommArray; BYTES_PER_ELEMENT: number; name: string };

const ctorOf = (a: CommArray) => a.constructor as unknown as Ctor;
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
function checkPeers(
  ch: GroupChannel,
  c: CallSpec,
  mine: Descriptor,
  extra?: (q: number, d: Descriptor) => string | null,
): void {
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

const overlaps = (a: CommArray, b: CommArray) =>
  a.buffer === b.buffer &&
  a.byteLength > 0 &&
  b.byteLength > 0 &&
  a.byteOffset < b.byteOffset + b.byteLength &&
  b.byteOffset < a.byteOffset + a.byteLength;

/** Every member's descriptor of the current call (mine included); valid right after the first phase's arrive. */
function descriptors(ch: GroupChannel, mine: Descriptor): Descriptor[] {
  const out: Descriptor[] = [];
  for (let q = 0; q < ch.size; q++) out.push(q === ch.me ? mine : ch.arena.readDescriptor(q, ch.readHalf));
  return out;
}

/**
 * The lent send arrays of the call: rank q's (len(q) elements, read in place) where q lent it, my own `mine` if I
 * lent it, null where the data comes through the slots.
 */
async function lentArrays(
  ch: GroupChannel,
  ds: readonly Descriptor[],
  ctor: Ctor,
  mine: CommArray,
  len: (q: number) => number,
): Promise<(CommArray | null)[]> {
  const out: (CommArray | null)[] = [];
  for (let q = 0; q < ch.size; q++) {
    if (ds[q]!.buf === 0) out.push(null);
    else if (q === ch.me) out.push(mine);
    else out.push(await ch.peerArray(q, ds[q]!, ctor, len(q)));
  }
  return out;
}

// Lending (buffers.ts): a rank whose send array lives on a SharedArrayBuffer publishes only its descriptor, naming
// the array, and peers read it in place — one copy less per element than staging it through the sender's slot.
// Lent and staged members mix in one call: every member sees every descriptor after the first phase, so all agree
// on the number of rounds (the staged data's). A lender returns only after every peer has finished reading (its
// caller may overwrite the array as soon as the call resolves). Not lent: arrays that overlap the call's output,
// and premul_sum contributions (they must be scaled before the sum; staging scales them on the way).

/**
 * all_gather and all_gather_v (counts[q] elements from rank q, placed at displ[q]). Lent blocks are copied whole
 * in the first phase; staged blocks in rounds of one half-slot.
 */
async function gather(
  ch: GroupChannel,
  c: CallSpec,
  send: CommArray,
  recv: CommArray,
  counts: readonly number[] | null,
): Promise<void> {
  const P = ch.size;
  const me = ch.me;
  const ctor = ctorOf(send);
  const m = Math.floor(ch.arena.halfBytes / ctor.BYTES_PER_ELEMENT);
  const n = send.length;
  const cnt = (q: number) => (counts ? counts[q]! : n);
  const at = counts ? prefix(counts) : null;
  const displ = (q: number) => (at ? at[q]! : q * n);
  const inOwnBlock =
    send.buffer === recv.buffer && send.byteOffset === recv.byteOffset + displ(me) * recv.BYTES_PER_ELEMENT;
  const lent = overlaps(send, recv) && !inOwnBlock ? null : ch.lend(send);
  const own = () => place(recv, send, displ(me));
  let rounds = 1;
  let src: (CommArray | null)[] = [];
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
              for (let i = 0; i < P; i++)
                if (pd.counts[i] !== counts[i])
                  return `passed counts [${[...pd.counts].join(',')}] (mine: [${counts.join(',')}])`;
              return null;
            }
          : undefined,
      );
      const ds = descriptors(ch, d);
      let staged = 0;
      for (let q = 0; q < P; q++) if (ds[q]!.buf === 0) staged = Math.max(staged, cnt(q));
      rounds = Math.max(1, Math.ceil(staged / m));
      src = await lentArrays(ch, ds, ctor, send, cnt);
      for (let q = 0; q < P; q++) if (q !== me && src[q] && cnt(q) > 0) copyInto(recv, displ(q), src[q]!, true);
    }
    for (let q = 0; q < P; q++) {
      if (q === me || src[q]) continue;
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

async function allGatherV(
  ch: GroupChannel,
  c: CallSpec,
  send: CommArray,
  recv: CommArray,
  counts: readonly number[],
): Promise<void> {
  return gather(ch, c, send, recv, counts);
}

/**
 * Rank r reduces block r over every member, in rank order, straight into recv: from the lent send arrays in
 * place, from the slots of staged members (who copy all P blocks of their chunk there, scaled for premul_sum).
 */
async function reduceScatter(ch: GroupChannel, c: CallSpec, send: CommArray, recv: CommArray): Promise<void> {
  const P = ch.size;
  const me = ch.me;
  const n = recv.length;
  const ctor = ctorOf(send);
  const m = Math.floor(ch.arena.halfBytes / (P * ctor.BYTES_PER_ELEMENT));
  const red = c.reduce!;
  const lent = red.op === 'premul_sum' || overlaps(send, recv) ? null : ch.lend(send);
  let rounds = 1;
  // Elements of each block per round: a half-slot's share while anyone stages, else the whole block at once.
  let step = m;
  let src: (CommArray | null)[] = [];
  const parts: CommArray[] = new Array(P);
  for (let t = 0; t < rounds; t++) {
    const lo = t * step;
    await ch.beginWrite();
    const d = t === 0 ? descriptor(ch, c, send, n, reduceCode(red), undefined, lent) : null;
    if (!lent) {
      const len = clamp(n - lo, m);
      const mine = ch.out(ctor);
      for (let b = 0; b < P; b++) {
        const from = send.subarray(b * n + lo, b * n + lo + len);
        if (red.op === 'premul_sum') scaleInto(mine.subarray(b * m, b * m + len), from, red.factor);
        else copyInto(mine, b * m, from);
      }
    }
    await ch.arrive();
    if (d) {
      checkPeers(ch, c, d);
      const ds = descriptors(ch, d);
      step = ds.some((x) => x.buf === 0) ? m : Math.max(1, n);
      rounds = Math.max(1, Math.ceil(n / step));
      src = await lentArrays(ch, ds, ctor, send, () => P * n);
    }
    const len = clamp(n - lo, step);
    for (let q = 0; q < P; q++) {
      const a = src[q];
      parts[q] = a ? a.subarray(me * n + lo, me * n + lo + len) : ch.in(q, ctor).subarray(me * m, me * m + len);
    }
    const out = recv.subarray(lo, lo + len);
    reduceInto(out, parts, red.op);
    if (red.op === 'avg') divideInPlace(out, P);
    ch.finishRead();
  }
  if (lent) await ch.waitReaders();
}

/**
 * Two phases per round: (A) rank r reduces block r of the chunk over all ranks into its own buf, reading lent
 * bufs in place and staged members' chunks from their slots; (B) everyone copies block q from rank q — from its
 * buf if lent, else from its slot, where it published the reduced block. Each rank moves about 2·n bytes in and
 * out whatever the group size, instead of P·n for "everyone reduces everything".
 */
async function allReduce(ch: GroupChannel, c: CallSpec, buf: CommArray): Promise<void> {
  const P = ch.size;
  const me = ch.me;
  const n = buf.length;
  const ctor = ctorOf(buf);
  const m = Math.floor(ch.arena.halfBytes / ctor.BYTES_PER_ELEMENT);
  const red = c.reduce!;
  const lent = red.op === 'premul_sum' ? null : ch.lend(buf);
  let rounds = 1;
  // Chunk per round: a half-slot while anyone stages; if all lend, P half-slots (a block must fit my slot, where
  // a lender of rank ≥ 2 parks its own contribution, see below).
  let step = m;
  let src: (CommArray | null)[] = [];
  const parts: CommArray[] = new Array(P);
  for (let t = 0; t < rounds; t++) {
    const lo = t * step;
    await ch.beginWrite();
    const d = t === 0 ? descriptor(ch, c, buf, n, reduceCode(red), undefined, lent) : null;
    if (!lent) {
      const chunk = buf.subarray(lo, lo + clamp(n - lo, m));
      if (red.op === 'premul_sum') scaleInto(ch.out(ctor), chunk, red.factor);
      else copyInto(ch.out(ctor), 0, chunk);
    }
    await ch.arrive();
    if (d) {
      checkPeers(ch, c, d);
      const ds = descriptors(ch, d);
      step = ds.some((x) => x.buf === 0) ? m : m * P;
      rounds = Math.max(1, Math.ceil(n / step));
      src = await lentArrays(ch, ds, ctor, buf, () => n);
    }
    const L = clamp(n - lo, step);
    const blk = (b: number) => Math.floor((b * L) / P);
    const a = blk(me);
    const b = blk(me + 1);
    // The accumulator is block `me` of my own buf: a staged rank's chunk is already in its slot; a lender's block
    // `me` is read by nobody else (peers read their own blocks of it).
    const acc = buf.subarray(lo + a, lo + b);
    for (let q = 0; q < P; q++) {
      const s = src[q];
      parts[q] = s ? s.subarray(lo + a, lo + b) : ch.in(q, ctor).subarray(a, b);
    }
    // reduceInto may write over srcs[0] and srcs[1] only: a lender of rank ≥ 2 first parks its contribution in its
    // own slot (its slot carries no data of this call for the peers: they read its buf).
    if (lent && me >= 2) {
      const park = ch.in(me, ctor).subarray(0, b - a);
      copyInto(park, 0, acc);
      parts[me] = park;
    }
    reduceInto(acc, parts, red.op);
    if (red.op === 'avg') divideInPlace(acc, P);
    // Phase B publishes in the other half. Every peer has arrived at phase A, so every peer has finished reading
    // the phase before it — the last user of that half — and no wait is needed.
    if (!lent) copyInto(ch.out(ctor), a, acc);
    await ch.arrive();
    for (let q = 0; q < P; q++) {
      if (q === me) continue;
      const qa = blk(q);
      const qb = blk(q + 1);
      const s = src[q];
      copyInto(buf, lo + qa, s ? s.subarray(lo + qa, lo + qb) : ch.in(q, ctor).subarray(qa, qb));
    }
    ch.finishRead();
  }
  if (lent) await ch.waitReaders();
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
    throw new CollectiveError(
      'invalid',
      `all_to_all_v on ${ch.group}: rank ${me} sends ${sendCounts[me]} elements to itself but expects ${recvCounts[me]}`,
      {
        group: ch.group,
        op: c.op,
        seq: c.seq,
        rank: me,
      },
    );
  }
  const lent = overlaps(send, recv) ? null : ch.lend(send);
  const own = () => copyInto(recv, rd[me]!, send.subarray(sd[me]!, sd[me]! + sendCounts[me]!), true);
  let rounds = 1;
  let src: (CommArray | null)[] = [];
  for (let t = 0; t < rounds; t++) {
    const lo = t * m;
    await ch.beginWrite();
    const d = t === 0 ? descriptor(ch, c, send, -1, 0, sendCounts, lent) : null;
    if (!lent) {
      const mine = ch.out(ctor);
      for (let j = 0; j < P; j++) {
        if (j === me) continue;
        const len = clamp(sendCounts[j]! - lo, m);
        if (len > 0) copyInto(mine, j * m, send.subarray(sd[j]! + lo, sd[j]! + lo + len));
      }
    }
    await ch.arrive(t === 0 ? own : undefined);
    if (d) {
      checkPeers(ch, c, d, (q, pd) =>
        pd.counts[me] !== recvCounts[q]
          ? `sends ${pd.counts[me]} elements to rank ${me}, which expects ${recvCounts[q]} from it`
          : null,
      );
      const ds = descriptors(ch, d);
      let most = 0;
      for (let p = 0; p < P; p++) {
        if (ds[p]!.buf !== 0) continue;
        for (let q = 0; q < P; q++) if (p !== q) most = Math.max(most, ch.arena.descriptorCount(p, ch.readHalf, q));
      }
      rounds = Math.max(1, Math.ceil(most / m));
      // A lent send array is read at the sender's displacement for me (its counts are in its descriptor).
      const offs = new Array<number>(P).fill(0);
      src = await lentArrays(ch, ds, ctor, send, (q) => {
        const counts = ds[q]!.counts;
        for (let i = 0; i < me; i++) offs[q]! += counts[i]!;
        return sum(counts);
      });
      for (let q = 0; q < P; q++) {
        const s = src[q];
        if (q === me || !s || recvCounts[q] === 0) continue;
        copyInto(recv, rd[q]!, s.subarray(offs[q]!, offs[q]! + recvCounts[q]!), true);
      }
    }
    for (let q = 0; q < P; q++) {
      if (q === me || src[q]) continue;
      const len = clamp(recvCounts[q]! - lo, m);
      if (len > 0) copyInto(recv, rd[q]! + lo, ch.in(q, ctor).subarray(me * m, me * m + len), true);
    }
    ch.finishRead();
  }
  if (lent) await ch.waitReaders();
}

async function broadcast(ch: GroupChannel, c: CallSpec, buf: CommArray, root: number): Promise<void> {
  const n = buf.length;
  const ctor = ctorOf(buf);
  const m = Math.floor(ch.arena.halfBytes / ctor.BYTES_PER_ELEMENT);
  const isRoot = ch.me === root;
  const lent = isRoot ? ch.lend(buf) : null;
  let rounds = 1;
  let fromRoot: CommArray | null = null;
  for (let t = 0; t < rounds; t++) {
    const lo = t * m;
    const len = clamp(n - lo, m);
    await ch.beginWrite();
    const d = t === 0 ? descriptor(ch, c, buf, n, root, undefined, lent) : null;
    if (isRoot && !lent && len > 0) copyInto(ch.out(ctor), 0, buf.subarray(lo, lo + len));
    await ch.arrive();
    if (d) {
      checkPeers(ch, c, d);
      const rd = isRoot ? d : ch.arena.readDescriptor(root, ch.readHalf);
      rounds = rd.buf !== 0 ? 1 : Math.max(1, Math.ceil(n / m));
      if (!isRoot && rd.buf !== 0) {
        fromRoot = await ch.peerArray(root, rd, ctor, n);
        copyInto(buf, 0, fromRoot, true);
      }
    }
    if (!isRoot && !fromRoot && len > 0) copyInto(buf, lo, ch.in(root, ctor).subarray(0, len), true);
    ch.finishRead();
  }
  if (lent) await ch.waitReaders();
}

async function barrier(ch: GroupChannel, c: CallSpec): Promise<void> {
  await ch.beginWrite();
  const d = descriptor(ch, c, undefined, 0, 0);
  await ch.arrive();
  checkPeers(ch, c, d);
  ch.finishRead();
}
