// The pre-norm transformer block (both families):
//   h   = x + Attn(RMSNorm_attn(x))
//   out = h + (MoE | FFN)(RMSNorm_ffn(h))

import type { Runtime } from '../runtime.ts';
import type { ParamUnit } from '../params/unit.ts';
import type { BlockSpec } from '../spec.ts';
import { GqaAttention, type GqaCtx } from '../layers/attention-gqa.ts';
import { MlaAttention, type MlaCtx } from '../layers/attention-mla.ts';
import { FeedForward, type FfnCtx } from '../layers/ffn.ts';
import {
  rmsnormBackward,
  rmsnormForward,
  rmsnormForwardBf16,
  rmsnormRelease,
  type RmsNormCtx,
} from '../layers/rmsnorm.ts';
import { paramDtypeOf } from '../../tensor/precision.ts';
import { type Operand, releaseOperand } from '../layers/linear.ts';
import type { RopeTable } from '../layers/rope.ts';
import { MoeLayer, type MoeBuffers, type MoeCtx } from '../moe/layer.ts';

export interface BlockPreCtx {
  B: number;
  S: number;
  attnNorm: RmsNormCtx;
  /**
   * RMSNorm_attn(x), the attention's input (owned), kept for backward only when the attention reads it there: under
   * bf16 compute the attention keeps its bf16 rounding instead (its ctx's xm), so the f32 copy is dropped at once.
   */
  xn1: Float32Array | null;
  attn: GqaCtx | MlaCtx;
  /** x + attention (owned). */
  h: Float32Array;
  ffnNorm: RmsNormCtx;
  /**
   * RMSNorm_ffn(h): the FFN / MoE input (owned). bf16 for a dense FFN under bf16 compute (its products are all
   * that read it); f32 for MoE (its router and row gathers read f32).
   */
  xn2: Operand;
}

export interface BlockCtx extends BlockPreCtx {
  ffn: FfnCtx | MoeCtx;
}

/** A MoE block's FFN input: always f32 (forwardPre writes bf16 only for a dense FFN). */
export function moeInput(pre: BlockPreCtx): Float32Array {
  if (!(pre.xn2 instanceof Float32Array)) throw new Error('MoE input: forwardPre wrote the FFN norm in bf16');
  return pre.xn2;
}

export class TransformerBlock {
  readonly attention: GqaAttention | MlaAttention;
  readonly ffn: FeedForward | MoeLayer;
  private readonly attnNormName: string;
  private readonly ffnNormName: string;

  constructor(
    readonly spec: BlockSpec,
    private readonly unit: ParamUnit,
    expertUnit: ParamUnit | null,
    moeBuffers: MoeBuffers | null,
    readonly D: number,
    rope: RopeTable,
  ) {
    const p = `layers.${spec.layerId}`;
    this.attnNormName = `${p}.attention_norm.weight`;
    this.ffnNormName = `${p}.ffn_norm.weight`;
    this.attention =
      spec.attn.kind === 'gqa'
        ? new GqaAttention(unit, `${p}.attention`, spec.attn, D, spec.attn.useRope ? rope : null)
        : new MlaAttention(unit, `${p}.attention`, spec.attn, D, rope);
    if (spec.ffn.kind === 'dense') {
      this.ffn = new FeedForward(unit, `${p}.feed_forward`, D, spec.ffn.hidden);
    } else {
      if (!expertUnit || !moeBuffers)
        throw new Error(`block ${spec.layerId}: a MoE block needs its experts unit and buffers`);
      this.ffn = new MoeLayer(spec.ffn, spec.layerId, unit, expertUnit, moeBuffers, D);
    }
  }

  get layerId(): number {
    return this.spec.layerId;
  }

  get moe(): MoeLayer | null {
    return this.ffn instanceof MoeLayer ? this.ffn : null;
  }

  // The block in two halves around its FFN / MoE, so a distributed driver can run the MoE stages (with collectives)
  // between them:  forwardPre → ffn(xn2) → forwardPost,  and  ffn backward → backwardPre.

  // x (B·S, D) → xn2 = RMSNorm_ffn(x + Attn(RMSNorm_attn(x))) (B·S, D) (owned by the returned ctx)
  forwardPre(rt: Runtime, x: Float32Array, B: number, S: number): BlockPreCtx {
    const N = B * S;
    const D = this.D;
    const u = this.unit;
    // Under bf16 compute GQA's projections are all that read the attention norm's output: written in bf16, it is
    // the attention's own xm from then on (released with its ctx).
    const gqaBf16 = this.attention instanceof GqaAttention && paramDtypeOf(rt.k) === 'bfloat16';
    const n1 = gqaBf16
      ? rmsnormForwardBf16(rt, x, u.p(this.attnNormName), N, D, this.spec.normEps)
      : rmsnormForward(rt, x, u.p(this.attnNormName), N, D, this.spec.normEps);
    const a =
      n1.out instanceof Uint16Array
        ? (this.attention as GqaAttention).forward(rt, n1.out, B, S)
        : this.attention.forward(rt, n1.out, B, S);
    let xn1: Float32Array | null = null;
    if (n1.out instanceof Float32Array) {
      if (a.ctx.xm === n1.out) xn1 = n1.out;
      else rt.pool.release(n1.out);
    }
    // h = x + attention out (in place), normed in the same pass.
    const h = a.out;
    const n2 =
      this.ffn instanceof FeedForward && paramDtypeOf(rt.k) === 'bfloat16'
        ? rmsnormForwardBf16(rt, h, u.p(this.ffnNormName), N, D, this.spec.normEps, x)
        : rmsnormForward(rt, h, u.p(this.ffnNormName), N, D, this.spec.normEps, x);
    return { B, S, attnNorm: n1.ctx, xn1, attn: a.ctx, h, ffnNorm: n2.ctx, xn2: n2.out };
  }

  // ffnOut (B·S, D) → out = h + ffnOut, in place (the caller owns it)
  forwardPost(rt: Runtime, pre: BlockPreCtx, ffnOut: Float32Array): Float32Array {
    rt.k.add(pre.h, ffnOut, ffnOut, pre.B * pre.S * this.D);
    return ffnOut;
  }

  // dxn2 (grad of the FFN input), dout (grad of the block output) → dx (B·S, D) (caller owns); releases pre
  backwardPre(rt: Runtime, pre: BlockPreCtx, dxn2: Float32Array, dout: Float32Array): Float32Array {
    const u = this.unit;
    releaseOperand(rt.pool, pre.xn2);
    // dh = the FFN norm's input gradient + the residual's (dout), summed as the norm writes it.
    const dh = rmsnormBackward(rt, pre.ffnNorm, u.p(this.ffnNormName), u.g(this.ffnNormName), dxn2, dout);
    rt.pool.release(pre.h);
    const dxn1 =
      this.attention instanceof GqaAttention
        ? this.attention.backward(rt, pre.attn as GqaCtx, dh)
        : this.attention.backward(rt, pre.attn as MlaCtx, dh);
    rt.pool.release(pre.xn1);
    const dx = rmsnormBackward(rt, pre.attnNorm, u.p(this.attnNormName), u.g(this.attnNormName), dxn1, dh);
    rt.pool.release(dxn1);
    rt.pool.release(dh);
    return dx;
  }

  // x (B·S, D) → out (B·S, D) (caller owns); x must stay alive until backward
  forward(rt: Runtime, x: Float32Array, B: number, S: number): { out: Float32Array; ctx: BlockCtx } {
    const pre = this.forwardPre(rt, x, B, S);
    const N = B * S;
    const f = this.ffn instanceof MoeLayer ? this.ffn.forward(rt, moeInput(pre), N) : this.ffn.forward(rt, pre.xn2, N);
    const out = this.forwardPost(rt, pre, f.out);
    return { out, ctx: { ...pre, ffn: f.ctx } };
  }

  // dout (B·S, D) → dx (B·S, D) (caller owns); releases ctx
  backward(rt: Runtime, ctx: BlockCtx, dout: Float32Array): Float32Array {
    const dxn2 =
      this.ffn instanceof MoeLayer
        ? this.ffn.backward(rt, ctx.ffn as MoeCtx, dout)
        : this.ffn.backward(rt, ctx.ffn as FfnCtx, dout);
    const dx = this.backwardPre(rt, ctx, dxn2, dout);
    rt.pool.release(dxn2);
    return dx;
  }

  /** Drops a ctx without running backward (activation checkpointing: the block is recomputed later). */
  release(rt: Runtime, ctx: BlockCtx): void {
    this.releasePre(rt, ctx);
    if (this.ffn instanceof MoeLayer) this.ffn.release(rt, ctx.ffn as MoeCtx);
    else this.ffn.release(rt, ctx.ffn as FfnCtx);
  }

  releasePre(rt: Runtime, ctx: BlockPreCtx): void {
    rmsnormRelease(rt, ctx.attnNorm);
    rt.pool.release(ctx.xn1);
    if (this.attention instanceof GqaAttention) this.attention.release(rt, ctx.attn as GqaCtx);
    else this.attention.release(rt, ctx.attn as MlaCtx);
    rt.pool.release(ctx.h);
    rmsnormRelease(rt, ctx.ffnNorm);
    releaseOperand(rt.pool, ctx.xn2);
  }
}
