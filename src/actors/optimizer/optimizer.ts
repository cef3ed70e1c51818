// The optimizer actor (`optimizer`) of a rank: AdamW state on the rank's local shards (what the FSDP shards hold),
// the LR schedule, and gradient clipping over all shards — torchtitan's two-group norm (routed experts on the EP
// mesh, everything else) combined as sqrt(n_ep² + n_nonep²) (torchtitan-semantics.md §5.4). Its machine is
// protocols/optimizer.machine.ts.

import { fromPromise } from 'xstate';
import type { CallSite, Communicator } from '../../comm/communicator.ts';
import type { FlatParams } from '../../models/params/unit.ts';
import { AdamW, type AdamWConfig } from '../../models/optim/adamw.ts';
import { clipCoefficient, gradNormSquared, scaleGrads, splitForClipping } from '../../models/optim/clip.ts';
import { LRScheduler, type LRScheduleConfig } from '../../models/optim/lr-schedule.ts';
import { optimizerMachine, type OptimizerStageInput } from '../../protocols/optimizer.machine.ts';
import type { Allocator } from '../../tensor/allocator.ts';
import type { Kernels } from '../../tensor/kernels-api.ts';
import { siteOf } from '../call-site.ts';
import type { StepFailure } from '../wait.ts';

/** What a shard exposes to the optimizer beyond FlatParams: its gradient shard can be zeroed. */
export interface OptimizedShard extends FlatParams {
  zeroGradShard(): void;
}

export class Optimizer {
  readonly adamw: AdamW;
  readonly scheduler: LRScheduler;

  constructor(
    private readonly shards: readonly OptimizedShard[],
    config: AdamWConfig,
    schedule: LRScheduleConfig,
    private readonly k: Kernels,
    alloc: Allocator,
  ) {
    this.adamw = new AdamW(shards, config, k, alloc);
    this.scheduler = new LRScheduler(config.lr, schedule);
  }

  zeroGrad(): void {
    for (const s of this.shards) s.zeroGradShard();
  }

  /**
   * Clips every gradient shard by the global norm; returns the pre-clip norm (the logged grad_norm). Each shard is
   * held once per replica, so the squares are summed over the FSDP group only (efsdp × ep = fsdp for routed
   * experts), in one all_reduce of both groups' partial sums.
   */
  async clip(fsdp: Communicator, maxNorm: number, site?: CallSite): Promise<number> {
    const { ep, nonEp } = splitForClipping(this.shards);
    const sq = new Float64Array([gradNormSquared(this.k, nonEp), gradNormSquared(this.k, ep)]);
    await fsdp.allReduce(sq, { op: 'sum' }, { tag: 'grad norm²', site });
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

  /** The optimizer machine with this optimizer's stages; `fsdp` is the clipping norm's group. */
  machine(fsdp: Communicator, failure: StepFailure) {
    const guard =
      <T>(fn: (input: OptimizerStageInput) => Promise<T> | T) =>
      async ({ input }: { input: OptimizerStageInput }): Promise<T> => {
        try {
          return await fn(input);
        } catch (e) {
          failure.first ??= e;
          throw e;
        }
      };
    return optimizerMachine.provide({
      actors: {
        zeroGrad: fromPromise<void, OptimizerStageInput>(guard(() => this.zeroGrad())),
        clip: fromPromise<number, OptimizerStageInput>(
          guard((i) => this.clip(fsdp, i.maxNorm!, siteOf('optimizer', 'optimizer', i))),
        ),
        step: fromPromise<void, OptimizerStageInput>(guard((i) => this.step(i.lr!))),
      },
    });
  }
}
