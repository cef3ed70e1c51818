// Final norm + output projection + loss (torchtitan-semantics.md §5.1):
//   xn = RMSNorm(h) (eps: llama4 norm_eps, DSV3 fp32 machine eps); logits = xn·Woutᵀ (N,V)
//   loss_sum = Σ_valid (logsumexp(z) − z[y]) with ignore_index −100; the microbatch contributes loss_sum · scale
//   with scale = 1 / (global valid tokens), so every valid token of the step weighs the same on every rank.

import type { Runtime } from '../runtime.ts';
import type { ParamUnit } from '../params/unit.ts';
import { rmsnormBackward, rmsnormForward, type RmsNormCtx } from '../layers/rmsnorm.ts';
import { paramDtypeOf } from '../../tensor/precision.ts';
import { linearBwdInput, linearBwdWeight, linearFwd, type Operand, releaseOperand } from '../layers/linear.ts';

export const IGNORE_INDEX = -100;

export interface HeadCtx {
  N: number;
  norm: RmsNormCtx;
  xn: Float32Array;
  logits: Float32Array;
  lse: Float32Array;
  labels: Int32Array;
  scale: number;
}

export class OutputHead {
  constructor(
    private readonly unit: ParamUnit,
    readonly D: number,
    readonly V: number,
    readonly eps: number,
  ) {
    unit.layout.entry('norm.weight');
    unit.layout.entry('output.weight');
  }

  // h (N,D), labels (N) → loss_sum (Σ over valid tokens, double) and ctx
  forward(
    rt: Runtime,
    h: Float32Array,
    labels: Int32Array,
    N: number,
    scale: number,
  ): { lossSum: number; ctx: HeadCtx } {
    const { D, V } = this;
    const n = rmsnormForward(rt, h, this.unit.p('norm.weight'), N, D, this.eps);
    const logits = rt.pool.get(N * V);
    linearFwd(rt.k, n.out, this.unit.p('output.weight'), logits, N, D, V);
    const lse = rt.pool.get(N);
    const lossSum = rt.k.crossEntropyFwd(logits, labels, lse, N, V);
    return { lossSum, ctx: { N, norm: n.ctx, xn: n.out, logits, lse, labels, scale } };
  }

  // → dh (N,D) (caller owns); output and norm grads +=; releases ctx
  backward(rt: Runtime, ctx: HeadCtx): Float32Array {
    const { D, V } = this;
    const { N, logits } = ctx;
    // Under bf16 compute the (N, V) logit gradient — the step's largest operand — is written in bf16 (what both
    // products read) and the f32 logits given back at once; under f32 it overwrites the logits.
    let dl: Operand = logits;
    if (paramDtypeOf(rt.k) === 'bfloat16') {
      dl = rt.pool.u16(N * V);
      rt.k.crossEntropyBwd(logits, ctx.labels, ctx.lse, dl, N, V, ctx.scale);
      rt.pool.release(logits);
    } else rt.k.crossEntropyBwd(logits, ctx.labels, ctx.lse, logits, N, V, ctx.scale);
    rt.pool.release(ctx.lse);
    linearBwdWeight(rt.k, dl, ctx.xn, this.unit.g('output.weight'), N, D, V);
    const dxn = rt.pool.get(N * D);
    linearBwdInput(rt.k, dl, this.unit.p('output.weight'), dxn, N, D, V);
    releaseOperand(rt.pool, dl);
    rt.pool.release(ctx.xn);
    const dh = rmsnormBackward(rt, ctx.norm, this.unit.p('norm.weight'), this.unit.g('norm.weight'), dxn);
    rt.pool.release(dxn);
    return dh;
  }

  release(rt: Runtime, ctx: HeadCtx): void {
    rt.pool.release(ctx.lse);
    rt.pool.release(ctx.logits);
    rt.pool.release(ctx.xn);
    rt.pool.release(ctx.norm.rstd);
  }
}
