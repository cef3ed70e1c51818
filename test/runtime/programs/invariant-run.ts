// A rank program for the randomized-schedule tests (test/runtime/schedules.test.ts): distributed-run's train mode
// (src/actors/programs/distributed-run.ts: the global batch split as the trainer splits it, `steps` optimizer
// steps, full parameters gathered to rank 0) plus what the invariants need from inside the rank:
//   - the Allocator's live 'activations' bytes and the activation pool's handed-out buffer count before the first
//     step and after every step (a leak shows as growth);
//   - the data of the MoE metadata collectives (a2a / allgather-padded "counts", allgather-rs "routing ids"), by
//     wrapping this rank's EP communicator, so the test can check that the rows moved match the counts exchanged;
//   - the rank's bytes per group name (its communicators' own counters), to compare with the observed collectives.
// Collective start/end events come from the inproc world's observer, which the test installs (one global order).

import type { RankContext } from '../../../src/comm/launch.ts';
import type { ByteCounters, CallOptions, CommArray, Communicator } from '../../../src/comm/communicator.ts';
import { RankHost } from '../../../src/actors/rank-host.ts';
import { shardBatch, type DistributedRunArgs } from '../../../src/actors/programs/distributed-run.ts';

export interface MetaRecord {
  tag: string;
  op: 'all_to_all_v' | 'all_gather';
  send: number[];
  recv: number[];
}

export interface InvariantResult {
  rank: number;
  losses: number[];
  gradNorms: number[];
  /** Rank 0: every parameter and expert bias, full. */
  tensors: Record<string, Float32Array> | null;
  activations: { before: number; after: number[] };
  poolLive: { before: number; after: number[] };
  meta: MetaRecord[];
  bytes: Record<string, ByteCounters>;
}

const isMeta = (tag: string | undefined) => !!tag && (tag.endsWith(' counts') || tag.endsWith(' routing ids'));

/** Records the data of this communicator's MoE metadata collectives (send as issued, recv once complete). */
function recordMeta(ep: Communicator, out: MetaRecord[]): void {
  const a2a = ep.allToAllV.bind(ep);
  const ag = ep.allGather.bind(ep);
  (ep as { allToAllV: Communicator['allToAllV'] }).allToAllV = async <T extends CommArray>(
    send: T,
    sc: readonly number[],
    recv: T,
    rc: readonly number[],
    o?: CallOptions,
  ) => {
    const sent = isMeta(o?.tag) ? Array.from(send) : null;
    await a2a(send, sc, recv, rc, o);
    if (sent) out.push({ tag: o!.tag!, op: 'all_to_all_v', send: sent, recv: Array.from(recv) });
  };
  (ep as { allGather: Communicator['allGather'] }).allGather = async <T extends CommArray>(
    send: T,
    recv: T,
    o?: CallOptions,
  ) => {
    const sent = isMeta(o?.tag) ? Array.from(send) : null;
    await ag(send, recv, o);
    if (sent) out.push({ tag: o!.tag!, op: 'all_gather', send: sent, recv: Array.from(recv) });
  };
}

export async function rankMain(ctx: RankContext<DistributedRunArgs>): Promise<InvariantResult> {
  const a = ctx.args;
  const host = await RankHost.create(ctx.world, a.job, null);
  try {
    const meta: MetaRecord[] = [];
    const ep = host.mesh.get('ep');
    if (ep.size > 1) recordMeta(ep, meta);
    const { index, degree } = host.mesh.batch;
    const mbs = shardBatch(a, index, degree);
    const live = () => host.alloc.stats().live.activations;
    const res: InvariantResult = {
      rank: ctx.rank,
      losses: [],
      gradNorms: [],
      tensors: null,
      activations: { before: live(), after: [] },
      poolLive: { before: host.model.rt.pool.liveCount, after: [] },
      meta,
      bytes: {},
    };
    for (let s = 0; s < (a.steps ?? 1); s++) {
      const r = await host.step(mbs);
      res.losses.push(r.globalAvgLoss);
      res.gradNorms.push(r.gradNorm);
      res.activations.after.push(live());
      res.poolLive.after.push(host.model.rt.pool.liveCount);
    }
    const full = await host.fullTensors('params');
    res.bytes = host.bytesByGroup();
    if (ctx.rank === 0) res.tensors = Object.fromEntries([...full].map(([k, v]) => [k, v.data]));
    return res;
  } finally {
    await host.close();
  }
}
