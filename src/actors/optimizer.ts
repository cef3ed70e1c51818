// The Optimizer actor of a rank: AdamW state on the rank's local shards (what the FSDP shards hold), the LR
// schedule, and gradient clipping over all shards — torchtitan's two-group norm (routed experts on the EP mesh,
// everything else) combined as sqrt(n_ep² + n_nonep²) (spec §5.4).

import type { Communicator } from '../comm/communicator.ts';
import type { FlatParams } from '../models/params/unit.ts';
import { AdamW, type AdamWConfig } from '../models/optim/adamw.ts';
import { clipCoefficient, gradNormSquared, scaleGrads, splitForClipping } from '../models/optim/clip.ts';
import { LRScheduler, type LRScheduleConfig } from '../models/optim/lr-schedule.ts';
import type { Allocator } from '../tensor/allocator.ts';
import type { Kernels } from '../tensor/kernels-api.ts';

export class Optimizer {
  readonly adamw: AdamW;
  readonly scheduler: LRScheduler;

  constructor(
    private readonly shards: readonly FlatParams[],
    config: AdamWConfig,
    schedule: LRScheduleConfig,
    private readonly k: Kernels,
    alloc: Allocator,
  ) {
    this.adamw = new AdamW(shards, config, k, alloc);
    this.scheduler = new LRScheduler(config.lr, schedule);
  }

  /**
   * Clips every gradient shard by the global norm; returns the pre-clip norm (the logged grad_norm). Each shard is
   * held once per replica, so the squares are summed over the FSDP group only (efsdp × ep = fsdp for routed
   * experts), in one all_reduce of both groups' partial sums.
   */
  async clip(fsdp: Communicator, maxNorm: number): Promise<number> {
    const { ep, nonEp } = splitForClipping(this.shards);
    const sq = new Float64Array([gradNormSquared(this.k, nonEp), gradNormSquared(this.k, ep)]);
    await fsdp.allReduce(sq, { op: 'sum' }, { tag: 'grad norm²' });
    const total = Math.sqrt(sq[0]! + sq[1]!);
    scaleGrads(this.k, this.shards, clipCoefficient(maxNorm, total));
    return total;
  }

  /** AdamW with this step's learning rate. */
  step(lr: number): void {
    this.adamw.step(lr);
  }

  /** Moments and step count of one shard (checkpoints). */
  stateOf(id: string): { m: Float32Array; v: Float32Array; step: number } {
    return this.adamw.stateOf(id);
  }
}
