// Llama4 attention: GQA with RoPE on q and k (NoPE layers skip it), causal SDPA with scale 1/sqrt(hd), no biases.
//   q = x·Wqᵀ (N,Hq·hd), k = x·Wkᵀ, v = x·Wvᵀ (N,Hkv·hd); rope(q), rope(k); o = attn(q,k,v); out = o·Woᵀ (N,D)

import type { Runtime } from '../runtime.ts';
import type { ParamUnit } from '../params/unit.ts';
import type { GqaSpec } from '../spec.ts';
import { checkRopeLength, type RopeTable } from './rope.ts';
import {
  linearBwdInput,
  linearBwdWeight,
  linearFwd,
  type Operand,
  releaseOperand,
  releaseRounded,
  roundOnce,
} from './linear.ts';
import {
  type SdpaSaved,
  type SdpaShape,
  sdpaBackward,
  sdpaForward,
  sdpaForwardBf16,
  sdpaInBf16,
  sdpaRelease,
} from './sdpa.ts';

export interface GqaCtx {
  /** x and o as the projections read them: bf16 roundings under bf16 compute (kept for the weight gradients);
   *  om is att.o itself when SDPA wrote o in bf16. */
  xm: Operand;
  om: Operand;
  B: number;
  S: number;
  /** What SDPA's backward reads (bf16 under bf16 compute). */
  att: SdpaSaved;
}

export class GqaAttention {
  private readonly names: { wq: string; wk: string; wv: string; wo: string };

  constructor(
    private readonly unit: ParamUnit,
    prefix: string,
    readonly spec: GqaSpec,
    readonly D: number,
    private readonly rope: RopeTable | null,
  ) {
    this.names = {
      wq: `${prefix}.wq.weight`,
      wk: `${prefix}.wk.weight`,
      wv: `${prefix}.wv.weight`,
      wo: `${prefix}.wo.weight`,
    };
    for (const n of Object.values(this.names)) unit.layout.entry(n);
    if (spec.useRope && (!rope || rope.dim !== spec.headDim))
      throw new Error(`GqaAttention ${prefix}: needs a RoPE table of dim ${spec.headDim}`);
  }

  private applyRope(rt: Runtime, t: Float32Array, N: number, S: number, heads: number, inverse: boolean): void {
    if (!this.spec.useRope) return;
    const hd = this.spec.headDim;
    const r = this.rope!;
    rt.k.rope(t, r.cos, r.sin, N, S, heads, heads * hd, hd, 0, hd, inverse);
  }

  // t (N rows at stride ld, `heads` heads) rotated (RoPE; NoPE layers: as is) and rounded into out (rows at
  // stride ldo) in one pass; returns out.
  private ropeInto(
    rt: Runtime,
    t: Float32Array,
    ld: number,
    N: number,
    S: number,
    heads: number,
    inverse: boolean,
    out: Uint16Array,
    ldo: number,
  ): Uint16Array {
    const hd = this.spec.headDim;
    if (!this.spec.useRope) rt.k.toBf16Rows(t, ld, N, heads * hd, out, ldo);
    else rt.k.ropeBf16(t, this.rope!.cos, this.rope!.sin, N, S, heads, ld, hd, 0, hd, inverse, out, ldo);
    return out;
  }

  // Under bf16 compute the three input projections run as one product with the stacked weight [Wq; Wk; Wv] (a view:
  // the three are adjacent in the unit's storage), and so do their two backward products: one (N, D)·(D, F) product
  // instead of three of a third the width, where oneDNN's bf16 kernels run 10–20 % faster (F = (Hq + 2·Hkv)·hd;
  // docs/benchmarks.md), and the input gradient summed inside one product instead of three accumulating ones. Only
  // under bf16 (whose contract is a tolerance against torch, not its bits): the f32 path keeps torch's three linears.
  // The stacked weight, or its gradient (attached only during backward under FSDP); null where the path is the
  // three separate products. The choice depends on the dtype and the layout alone, so forward and backward agree.
  private fused(rt: Runtime, B: number, S: number, of: 'data' | 'grad'): Float32Array | null {
    if (!sdpaInBf16(rt, this.sdpaShape(B, S))) return null;
    return this.unit.span([this.names.wq, this.names.wk, this.names.wv], of);
  }

  // x (B·S, D) → out (B·S, D) (caller owns)
  // x may come in bf16 already (its norm wrote it so under bf16 compute); ctx.xm then owns it.
  forward(rt: Runtime, x: Operand, B: number, S: number): { out: Float32Array; ctx: GqaCtx } {
    const { nHeads: Hq, nKvHeads: Hkv, headDim: hd } = this.spec;
    const N = B * S;
    const D = this.D;
    if (this.spec.useRope) checkRopeLength(this.rope!, S);
    const u = this.unit;
    const xm = x instanceof Uint16Array ? x : roundOnce(rt.k, rt.pool, x, N * D);
    const fusedW = this.fused(rt, B, S, 'data');
    let att: SdpaSaved;
    if (fusedW) {
      // [q | k | v] rows (N, F); each slice rounded into its own bf16 array, q and k by their RoPE as it stores.
      const F = (Hq + 2 * Hkv) * hd;
      const qkv = rt.pool.get(N * F);
      linearFwd(rt.k, xm, fusedW, qkv, N, D, F);
      const q16 = this.ropeInto(rt, qkv, F, N, S, Hq, false, rt.pool.u16(N * Hq * hd), Hq * hd);
      const k16 = this.ropeInto(rt, qkv.subarray(Hq * hd), F, N, S, Hkv, false, rt.pool.u16(N * Hkv * hd), Hkv * hd);
      const v16 = rt.pool.u16(N * Hkv * hd);
      rt.k.toBf16Rows(qkv.subarray((Hq + Hkv) * hd), F, N, Hkv * hd, v16, Hkv * hd);
      rt.pool.release(qkv);
      att = sdpaForwardBf16(rt, this.sdpaShape(B, S), q16, k16, v16);
    } else {
      const q = rt.pool.get(N * Hq * hd);
      const k = rt.pool.get(N * Hkv * hd);
      const v = rt.pool.get(N * Hkv * hd);
      linearFwd(rt.k, xm, u.p(this.names.wq), q, N, D, Hq * hd);
      linearFwd(rt.k, xm, u.p(this.names.wk), k, N, D, Hkv * hd);
      linearFwd(rt.k, xm, u.p(this.names.wv), v, N, D, Hkv * hd);
      this.applyRope(rt, q, N, S, Hq, false);
      this.applyRope(rt, k, N, S, Hkv, false);
      att = sdpaForward(rt, this.sdpaShape(B, S), q, k, v);
    }
    const out = rt.pool.get(N * D);
    const om = att.o instanceof Uint16Array ? att.o : roundOnce(rt.k, rt.pool, att.o, N * Hq * hd);
    linearFwd(rt.k, om, u.p(this.names.wo), out, N, Hq * hd, D);
    return { out, ctx: { xm, om, B, S, att } };
  }

  private sdpaShape(B: number, S: number): SdpaShape {
    const { nHeads: Hq, nKvHeads: Hkv, headDim: hd, scale } = this.spec;
    return { B, S, Hq, Hkv, dk: hd, dv: hd, scale };
  }

  // dout (B·S, D) → dx (B·S, D) (caller owns); Wq, Wk, Wv, Wo grads +=; releases ctx
  backward(rt: Runtime, ctx: GqaCtx, dout: Float32Array): Float32Array {
    const { nHeads: Hq, nKvHeads: Hkv, headDim: hd } = this.spec;
    const { B, S, xm } = ctx;
    const N = B * S;
    const D = this.D;
    const u = this.unit;
    // Under bf16 attention its input gradient dO is written in bf16 by its product (rounded once, as it reads it).
    const dO: Operand = ctx.att.o instanceof Uint16Array ? rt.pool.u16(N * Hq * hd) : rt.pool.get(N * Hq * hd);
    const doutm = roundOnce(rt.k, rt.pool, dout, N * D);
    linearBwdWeight(rt.k, doutm, ctx.om, u.g(this.names.wo), N, Hq * hd, D);
    linearBwdInput(rt.k, doutm, u.p(this.names.wo), dO, N, Hq * hd, D);
    releaseRounded(rt.pool, doutm);
    const { dq, dk, dv } = sdpaBackward(rt, this.sdpaShape(B, S), ctx.att, dO);
    releaseOperand(rt.pool, dO);
    if (ctx.om !== ctx.att.o) releaseRounded(rt.pool, ctx.om);
    const dx = rt.pool.get(N * D);
    const fusedW = this.fused(rt, B, S, 'data');
    const fusedG = this.fused(rt, B, S, 'grad');
    if (fusedW && fusedG) {
      // dq, dk, dv rounded side by side into [dq | dk | dv] rows (N, F), dq and dk by their inverse RoPE: one
      // weight-gradient product into the stacked gradient (the grads are adjacent like their weights) and one
      // input-gradient product.
      const F = (Hq + 2 * Hkv) * hd;
      const dqkv = rt.pool.u16(N * F);
      this.ropeInto(rt, dq, Hq * hd, N, S, Hq, true, dqkv, F);
      this.ropeInto(rt, dk, Hkv * hd, N, S, Hkv, true, dqkv.subarray(Hq * hd), F);
      rt.k.toBf16Rows(dv, Hkv * hd, N, Hkv * hd, dqkv.subarray((Hq + Hkv) * hd), F);
      linearBwdWeight(rt.k, dqkv, xm, fusedG, N, D, F);
      linearBwdInput(rt.k, dqkv, fusedW, dx, N, D, F, 0);
      rt.pool.releaseU16(dqkv);
    } else {
      this.applyRope(rt, dq, N, S, Hq, true);
      this.applyRope(rt, dk, N, S, Hkv, true);
      const dqm = roundOnce(rt.k, rt.pool, dq, N * Hq * hd);
      const dkm = roundOnce(rt.k, rt.pool, dk, N * Hkv * hd);
      const dvm = roundOnce(rt.k, rt.pool, dv, N * Hkv * hd);
      linearBwdWeight(rt.k, dqm, xm, u.g(this.names.wq), N, D, Hq * hd);
      linearBwdWeight(rt.k, dkm, xm, u.g(this.names.wk), N, D, Hkv * hd);
      linearBwdWeight(rt.k, dvm, xm, u.g(this.names.wv), N, D, Hkv * hd);
      linearBwdInput(rt.k, dqm, u.p(this.names.wq), dx, N, D, Hq * hd, 0);
      linearBwdInput(rt.k, dkm, u.p(this.names.wk), dx, N, D, Hkv * hd, 1);
      linearBwdInput(rt.k, dvm, u.p(this.names.wv), dx, N, D, Hkv * hd, 1);
      releaseRounded(rt.pool, dqm);
      releaseRounded(rt.pool, dkm);
      releaseRounded(rt.pool, dvm);
    }
    releaseRounded(rt.pool, xm);
    rt.pool.release(dq);
    rt.pool.release(dk);
    rt.pool.release(dv);
    return dx;
  }

  release(rt: Runtime, ctx: GqaCtx): void {
    if (ctx.om !== ctx.att.o) releaseRounded(rt.pool, ctx.om);
    sdpaRelease(rt, ctx.att);
    releaseRounded(rt.pool, ctx.xm);
  }
}
