// Moves the data of one collective once every member has arrived: typed-array copies between the members' own
// buffers (which stay valid until completion, as with MPI's nonblocking calls) and reductions in rank order.
// `calls[i]` is the call of group rank i; the calls have been checked to agree (collective-match.ts).

import type { CallSpec } from '../base-communicator.ts';
import type { CommArray } from '../communicator.ts';
import { prefix } from '../counts.ts';
import { reduceInto } from '../reduce.ts';

export function performCollective(calls: readonly CallSpec[]): void {
  const P = calls.length;
  const c0 = calls[0]!;
  switch (c0.op) {
    case 'barrier':
      return;
    case 'all_gather': {
      const n = c0.send!.length;
      for (const dst of calls) for (let i = 0; i < P; i++) dst.recv!.set(calls[i]!.send!, i * n);
      return;
    }
    case 'all_gather_v': {
      const displs = prefix(c0.counts!);
      for (const dst of calls) for (let i = 0; i < P; i++) dst.recv!.set(calls[i]!.send!, displs[i]);
      return;
    }
    case 'reduce_scatter': {
      const n = c0.recv!.length;
      const sends = calls.map((c) => c.send!);
      for (let r = 0; r < P; r++) reduceInto(calls[r]!.recv!, sends, new Array<number>(P).fill(r * n), n, c0.reduce!);
      return;
    }
    case 'all_reduce': {
      const bufs = calls.map((c) => c.buf!);
      const n = bufs[0]!.length;
      // Reduce into rank 0's buffer (reduceInto allows out to alias input 0), then copy it to the others.
      reduceInto(bufs[0]!, bufs, new Array<number>(P).fill(0), n, c0.reduce!);
      for (let r = 1; r < P; r++) bufs[r]!.set(bufs[0]!);
      return;
    }
    case 'broadcast': {
      const src = calls[c0.root!]!.buf!;
      for (let r = 0; r < P; r++) if (r !== c0.root) calls[r]!.buf!.set(src);
      return;
    }
    case 'all_to_all_v': {
      const sdispls = calls.map((c) => prefix(c.sendCounts!));
      const rdispls = calls.map((c) => prefix(c.recvCounts!));
      for (let i = 0; i < P; i++) {
        const send: CommArray = calls[i]!.send!;
        for (let j = 0; j < P; j++) {
          const n = calls[i]!.sendCounts![j]!;
          if (n === 0) continue;
          const s = sdispls[i]![j]!;
          calls[j]!.recv!.set(send.subarray(s, s + n), rdispls[j]![i]!);
        }
      }
      return;
    }
  }
}
