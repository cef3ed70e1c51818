// A rank program (see src/comm/launch.ts) that runs a fixed global batch through the distributed runtime and
// returns what parity checks and `moe-actors grad --ranks N` need: the loss, and on rank 0 the full gradients
// (grad mode) or the losses, grad norms and full parameters after `steps` optimizer steps (train mode).
// The global batch (B, S) is split as the trainer splits data: contiguous rows per batch (data-parallel) rank,
// then `microbatches` gradient-accumulation microbatches per rank.

import type { RankContext } from '../../comm/launch.ts';
import type { Microbatch } from '../../models/model/model.ts';
import type { EventSink, TraceEvent } from '../../protocols/events.ts';
import { RankHost, type RankJob } from '../rank-host.ts';

export interface DistributedRunArgs {
  job: RankJob;
  tokens: Int32Array;
  labels: Int32Array;
  B: number;
  S: number;
  /** Microbatches per rank per step (gradient accumulation). */
  microbatches: number;
  mode: 'grad' | 'train';
  /** train mode: optimizer steps on the same batch. */
  steps?: number;
  /** Keep the trace events (returned per rank). */
  trace?: boolean;
}

export interface DistributedRunResult {
  rank: number;
  /** grad: the loss; train: the loss of every step (global average). */
  losses: number[];
  gradNorms: number[];
  lrs: number[];
  /** Rank 0 only: full tensors by torchtitan name (grads in grad mode, params + expert_bias in train mode). */
  tensors: Record<string, { shape: number[]; data: Float32Array }> | null;
  events?: TraceEvent[];
  peakBytes: number;
}

/** This rank's microbatches of the global batch. */
export function shardBatch(
  a: Pick<DistributedRunArgs, 'tokens' | 'labels' | 'B' | 'S' | 'microbatches'>,
  index: number,
  degree: number,
): Microbatch[] {
  const { B, S, microbatches } = a;
  if (B % (degree * microbatches) !== 0) {
    throw new Error(
      `the batch of ${B} sequences does not split into ${degree} data-parallel ranks × ${microbatches} microbatches; use a batch size divisible by ${degree * microbatches}`,
    );
  }
  const per = B / degree / microbatches;
  const out: Microbatch[] = [];
  for (let m = 0; m < microbatches; m++) {
    const row = (index * microbatches + m) * per;
    out.push({
      B: per,
      S,
      tokens: a.tokens.slice(row * S, (row + per) * S),
      labels: a.labels.slice(row * S, (row + per) * S),
    });
  }
  return out;
}

export async function rankMain(ctx: RankContext<DistributedRunArgs>): Promise<DistributedRunResult> {
  const a = ctx.args;
  const events: TraceEvent[] = [];
  const sink: EventSink | null = a.trace ? { record: (e) => void events.push(e) } : null;
  const host = await RankHost.create(ctx.world, a.job, sink);
  try {
    const { index, degree } = host.mesh.batch;
    const mbs = shardBatch(a, index, degree);
    const losses: number[] = [];
    const gradNorms: number[] = [];
    const lrs: number[] = [];
    let which: 'grads' | 'params';
    if (a.mode === 'grad') {
      const r = await host.gradients(mbs);
      losses.push(r.globalAvgLoss);
      which = 'grads';
    } else {
      for (let s = 0; s < (a.steps ?? 1); s++) {
        const r = await host.step(mbs);
        losses.push(r.globalAvgLoss);
        gradNorms.push(r.gradNorm);
        lrs.push(r.lr);
      }
      which = 'params';
    }
    const full = await host.fullTensors(which);
    const tensors =
      ctx.rank === 0 ? Object.fromEntries([...full].map(([k, v]) => [k, { shape: [...v.shape], data: v.data }])) : null;
    return {
      rank: ctx.rank,
      losses,
      gradNorms,
      lrs,
      tensors,
      events: a.trace ? events : undefined,
      peakBytes: host.alloc.stats().peakTotal,
    };
  } finally {
    await host.close();
  }
}
