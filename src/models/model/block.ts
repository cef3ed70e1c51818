// The pre-norm transformer block (both families):
//   h   = x + Attn(RMSNorm_attn(x))
//   out = h + (MoE | FFN)(RMSNorm_ffn(h))

import type { Runtime } from '../runtime.ts';
import type { ParamUnit } from '../params/unit.ts';
import type { BlockSpec } from '../spec.ts';
import { GqaAttention, type GqaCtx } from '../layers/attention-gqa.ts';
import { MlaAttention, type MlaCtx } from '../layers/attention-mla.ts';
import { FeedForward, type FfnCtx } from '../layers/ffn.ts';
import { rmsnormBackward, rmsnormForward, rmsnormRelease, type RmsNormCtx } from '../layers/rmsnorm.ts';
import type { RopeTable } from '../layers/rope.ts';
import { MoeLayer, type MoeBuffers, type MoeCtx } from '../moe/layer.ts';

export interface BlockCtx {
  B: number;
  S: number;
  attnNorm: RmsNormCtx;
  xn1: Float32Array;
  attn: GqaCtx | MlaCtx;
  /** x + attention (owned). */
  h: Float32Array;
  ffnNorm: RmsNormCtx;
  xn2: Float32Array;
  ffn: FfnCtx | MoeCtx;
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
      if (!expertUnit || !moeBuffers) throw new Error(`block ${spec.layerId}: a MoE block needs its experts unit and buffers`);
      this.ffn = new MoeLayer(spec.ffn, spec.layerId, unit, expertUnit, moeBuffers, D);
    }
  }

  get layerId(): number {
    return this.spec.layerId;
  }

  get moe(): MoeLayer | null {
    return this.ffn instanceof MoeLayer ? this.ffn : null;
  }

  // x (B·S, D) → out (B·S, D) (caller owns); x must stay alive until backward
  forward(rt: Runtime, x: Float32Array, B: number, S: number): { out: Float32Array; ctx: BlockCtx } {
    const N = B * S;
    const D = this.D;
    const u = this.unit;
    const n1 = rmsnormForward(rt, x, u.p(this.attnNormName), N, D, this.spec.normEps);
    const a = this.attention.forward(rt, n1.out, B, S);
    const h = a.out;
    rt.k.add(x, h, h, N * D);
    const n2 = rmsnormForward(rt, h, u.p(this.ffnNormName), N, D, this.spec.normEps);
    const f =
      this.ffn instanceof MoeLayer ? this.ffn.forward(rt, n2.out, N) : this.ffn.forward(rt, n2.out, N);
    const out = f.out;
    rt.k.add(h, out, out, N * D);
    return { out, ctx: { B, S, attnNorm: n1.ctx, xn1: n1.out, attn: a.ctx, h, ffnNorm: n2.ctx, xn2: n2.out, ffn: f.ctx } };
  }

  // dout (B·S, D) → dx (B·S, D) (caller owns); releases ctx
  backward(rt: Runtime, ctx: BlockCtx, dout: Float32Array): Float32Array {
    const N = ctx.B * ctx.S;
    const D = this.D;
    const u = this.unit;
    const dxn2 =
      this.ffn instanceof MoeLayer
        ? this.ffn.backward(rt, ctx.ffn as MoeCtx, dout)
        : this.ffn.backward(rt, ctx.ffn as FfnCtx, dout);
    rt.pool.release(ctx.xn2);
    const dh = rmsnormBackward(rt, ctx.ffnNorm, u.p(this.ffnNormName), u.g(this.ffnNormName), dxn2);
    rt.pool.release(dxn2);
    rt.pool.release(ctx.h);
    rt.k.add(dh, dout, dh, N * D);
    const dxn1 =
      this.attention instanceof GqaAttention
        ? this.attention.backward(rt, ctx.attn as GqaCtx, dh)
        : this.attention.backward(rt, ctx.attn as MlaCtx, dh);
    rt.pool.release(ctx.xn1);
    const dx = rmsnormBackward(rt, ctx.attnNorm, u.p(this.attnNormName), u.g(this.attnNormName), dxn1);
    rt.pool.release(dxn1);
    rt.k.add(dx, dh, dx, N * D);
    rt.pool.release(dh);
    return dx;
  }

  /** Drops a ctx without running backward (activation checkpointing: the block is recomputed later). */
  release(rt: Runtime, ctx: BlockCtx): void {
    rmsnormRelease(rt, ctx.attnNorm);
    rt.pool.release(ctx.xn1);
    if (this.attention instanceof GqaAttention) this.attention.release(rt, ctx.attn as GqaCtx);
    else this.attention.release(rt, ctx.attn as MlaCtx);
    rt.pool.release(ctx.h);
    rmsnormRelease(rt, ctx.ffnNorm);
    rt.pool.release(ctx.xn2);
    if (this.ffn instanceof MoeLayer) this.ffn.release(rt, ctx.ffn as MoeCtx);
    else this.ffn.release(rt, ctx.ffn as FfnCtx);
  }
}
