// One optimizer step on one rank, in torchtitan's order (torchtitan-semantics.md §5): zero grads → lr of this step → all microbatches
// (each loss divided by the step's global valid-token count) → clip (pre-clip norm is the logged grad_norm) →
// expert-bias update (optimizer pre-hook) → AdamW → scheduler step.

import { AdamW, type AdamWConfig } from '../optim/adamw.ts';
import { clipGradScale } from '../optim/clip.ts';
import { LRScheduler, type LRScheduleConfig } from '../optim/lr-schedule.ts';
import { expertBiasUpdate, halveCheckpointedCounts } from '../moe/load-balance.ts';
import { isCheckpointed, type AcMode } from './ac.ts';
import { countValid, type Microbatch, type Model } from './model.ts';

export interface TrainConfig {
  adamw: AdamWConfig;
  schedule: LRScheduleConfig;
  /** training.max_norm. */
  maxNorm: number;
  ac: AcMode;
}

export interface StepResult {
  /** Σ over microbatches of CE sum / global valid tokens (torchtitan's loss_report). */
  loss: number;
  /** Pre-clip total gradient norm. */
  gradNorm: number;
  /** The lr this step used. */
  lr: number;
  validTokens: number;
  /** Wall-clock milliseconds of the step's phases (forward/backward summed over microbatches; optim = clip + expert-bias update + AdamW + scheduler). */
  phaseMs: { zero: number; fwd: number; bwd: number; optim: number };
}

/**
 * The auxiliary-loss-free update of every MoE layer with an expert_bias: halve the counts of checkpoint-wrapped
 * blocks, update the bias, zero the counts. (The all-reduce of the counts, between halving and updating, is the
 * distributed caller's; on one rank there is nothing to reduce.)
 */
export function updateExpertBiases(model: Model, ac: AcMode): void {
  for (const moe of model.moeLayers()) {
    const { expertBias, tokensPerExpert } = moe.buffers;
    const coeff = moe.spec.args.load_balance_coeff;
    if (!expertBias || coeff === null) continue;
    if (isCheckpointed(moe.layerId, ac)) halveCheckpointedCounts(tokensPerExpert);
    expertBiasUpdate(tokensPerExpert, expertBias, coeff);
    tokensPerExpert.fill(0);
  }
}

export class SingleRankTrainer {
  readonly optimizer: AdamW;
  readonly scheduler: LRScheduler;

  constructor(
    readonly model: Model,
    readonly config: TrainConfig,
  ) {
    this.optimizer = new AdamW(model.units.values(), config.adamw, model.rt.k, model.alloc);
    this.scheduler = new LRScheduler(config.adamw.lr, config.schedule);
  }

  step(microbatches: readonly Microbatch[], opts: { globalValidTokens?: number } = {}): StepResult {
    const m = this.model;
    if (microbatches.length === 0) throw new Error('trainStep: no microbatches');
    const t0 = performance.now();
    m.zeroGrads();
    const phaseMs = { zero: performance.now() - t0, fwd: 0, bwd: 0, optim: 0 };
    const lr = this.scheduler.lr();
    let valid = 0;
    for (const mb of microbatches) valid += countValid(mb.labels);
    const globalValid = opts.globalValidTokens ?? valid;
    let loss = 0;
    for (const mb of microbatches) {
      const t1 = performance.now();
      loss += m.forward(mb, { globalValidTokens: globalValid, ac: this.config.ac }).loss;
      const t2 = performance.now();
      m.backward();
      const t3 = performance.now();
      phaseMs.fwd += t2 - t1;
      phaseMs.bwd += t3 - t2;
    }
    const t4 = performance.now();
    const units = [...m.units.values()];
    // The clipping coefficient goes into AdamW's read of each gradient (the same products as scaling them first).
    const { total: gradNorm, coef } = clipGradScale(m.rt.k, units, this.config.maxNorm);
    updateExpertBiases(m, this.config.ac);
    this.optimizer.step(lr, coef);
    this.scheduler.step();
    phaseMs.optim = performance.now() - t4;
    return { loss, gradNorm, lr, validTokens: valid, phaseMs };
  }
}
