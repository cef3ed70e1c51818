// Peers reading a rank's send array in place (threads transport, SharedArrayBuffer-backed sends; buffers.ts):
// results equal to the staged path's, the lender's array reusable as soon as its call resolves, a registration a
// late thread missed is sent again on request, and a peer's handles are dropped once the owner lets go.

import type { RankContext } from '../../../src/comm/launch.ts';
import { PeerBuffers } from '../../../src/comm/threads/buffers.ts';
import type { ThreadsCommunicator } from '../../../src/comm/threads/communicator.ts';

export interface DirectArgs {
  n: number;
  iters: number;
}

export interface DirectSummary {
  lentCalls: number;
  wantServed: boolean;
}

const value = (rank: number, iter: number, i: number) => rank * 1000 + iter * 7 + (i % 113);

export async function rankMain(ctx: RankContext<DirectArgs>): Promise<DirectSummary> {
  const w = ctx.world as ThreadsCommunicator;
  const P = ctx.size;
  const { n, iters } = ctx.args;
  const send: Float32Array = new Float32Array(new SharedArrayBuffer(n * 4));
  const recv: Float32Array = new Float32Array(new SharedArrayBuffer(n * P * 4));
  const plainRecv: Float32Array = new Float32Array(n * P);
  for (let it = 0; it < iters; it++) {
    for (let i = 0; i < n; i++) send[i] = value(ctx.rank, it, i);
    // One call into a SharedArrayBuffer, one into a plain array; the same send array, lent both times.
    await w.allGather(send, recv);
    await w.allGather(send, plainRecv);
    // The lender may overwrite its send array at once: every peer has finished reading it.
    send.fill(-1);
    for (let q = 0; q < P; q++) {
      for (let i = 0; i < n; i++) {
        const want = value(q, it, i);
        if (recv[q * n + i] !== want || plainRecv[q * n + i] !== want) {
          throw new Error(
            `iter ${it}: element ${i} from rank ${q} is ${recv[q * n + i]} / ${plainRecv[q * n + i]}, expected ${want}`,
          );
        }
      }
    }
    // In place: send is this rank's block of recv.
    const mine = recv.subarray(ctx.rank * n, (ctx.rank + 1) * n);
    for (let i = 0; i < n; i++) mine[i] = value(ctx.rank, it + 1000, i);
    await w.allGather(mine, recv);
    for (let q = 0; q < P; q++)
      if (recv[q * n + 5] !== value(q, it + 1000, 5)) throw new Error(`in-place all_gather: block ${q} is wrong`);
  }

  // A thread that opened its channel after a registration was posted asks for it again; the owner, waiting in
  // the barrier with its event loop turning, answers.
  const registry = w.channel.buffers;
  if (!registry) return { lentCalls: w.channel.lentCalls, wantServed: false };
  const probe = new SharedArrayBuffer(64);
  const id = ctx.rank === 0 ? registry.idOf(probe) : 0;
  const ids = new Int32Array(P);
  await w.allGather(new Int32Array([id]), ids);
  let wantServed = true;
  if (ctx.rank === 1) {
    const late = new PeerBuffers(1, registry.channelName);
    wantServed = false;
    for (let k = 0; k < 50 && !late.get(0, ids[0]!); k++) {
      late.want(0, ids[0]!);
      await late.changed(20);
    }
    wantServed = late.get(0, ids[0]!) !== undefined;
    late.close();
  }
  await w.barrier();
  return { lentCalls: w.channel.lentCalls, wantServed };
}
