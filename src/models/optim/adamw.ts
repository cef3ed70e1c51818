// AdamW over flat buffers (units, or FSDP shards of them) (torch.optim.AdamW semantics, torchtitan-semantics.md §5.2): decoupled weight decay on every parameter
// (embeddings, norms, router and experts alike — torchtitan builds one param group), moments in category
// "optimizer" with the unit's layout, so an FSDP shard of a unit has the matching shard of its moments.
// With `l2` it is torch.optim.Adam instead (torchtitan's optimizer name "Adam"): the weight decay is added to the
// gradient before the moments (g + wd·p), so it is scaled by the adaptive step like any gradient.

import type { Allocator } from '../../tensor/allocator.ts';
import type { Kernels } from '../../tensor/kernels-api.ts';
import type { FlatParams } from '../params/unit.ts';

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
  /** torch.optim.Adam's L2 decay instead of AdamW's decoupled decay. */
  l2?: boolean;
}

interface State {
  unit: FlatParams;
  m: Float32Array;
  v: Float32Array;
  /**
   * torch keeps a step count per parameter; every parameter of a unit is stepped together, so one count per unit
   * is the same number.
   */
  step: number;
}

export class AdamW {
  private readonly states: State[];

  constructor(
    units: Iterable<FlatParams>,
    readonly config: AdamWConfig,
    private readonly k: Kernels,
    alloc: Allocator,
  ) {
    this.states = [...units].map((unit) => ({
      unit,
      m: alloc.f32('optimizer', unit.numel),
      v: alloc.f32('optimizer', unit.numel),
      step: 0,
    }));
  }

  /**
   * One update of every unit with learning rate `lr` (the scheduler's current value), each gradient taken as
   * g·gradScale: gradient clipping's coefficient (clipGradScale), which torch multiplies into the gradients first.
   * The kernel applies it as it reads them (the same float product) instead of a pass of its own; under Adam's L2
   * decay the gradients are scaled first, since the decay term is added to the clipped gradient.
   */
  step(lr: number, gradScale = 1): void {
    const c = this.config;
    const l2 = c.l2 === true && c.weight_decay !== 0;
    for (const s of this.states) {
      s.step++;
      // The gradient buffer is rewritten by the next backward, so it can carry the decay term.
      if (l2) {
        this.k.scale(s.unit.grad, gradScale, s.unit.numel);
        this.k.axpy(c.weight_decay, s.unit.data, s.unit.grad, s.unit.numel);
      }
      this.k.adamw(
        s.unit.data,
        s.unit.grad,
        s.m,
        s.v,
        s.unit.numel,
        lr,
        c.beta1,
        c.beta2,
        c.eps,
        l2 ? 0 : c.weight_decay,
        s.step,
        l2 ? 1 : gradScale,
      );
    }
  }

  /** Moments of one unit (checkpointing, tests). */
  stateOf(unitId: string): { m: Float32Array; v: Float32Array; step: number } {
    const s = this.states.find((x) => x.unit.id === unitId);
    if (!s) throw new Error(`AdamW: no state for unit ${unitId}`);
    return s;
  }
}
