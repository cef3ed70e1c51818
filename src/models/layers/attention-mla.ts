// DeepSeek-V3 multi-head latent attention (torchtitan-semantics.md §2.4). With dqk = dn + dr (nope + rope dims), Hh heads:
//   q  = x·Wqᵀ                       (N, Hh·dqk)   or  q = rmsnorm_q(x·Wq_aᵀ)·Wq_bᵀ with q-LoRA
//   rope on q[:, h, dn:dn+dr] (strided, in place)
//   c  = x·Wcᵀ (N, kvr),  kpe = x·Wpeᵀ (N, dr)      where [Wc; Wpe] = Wkv_a (rows kvr | dr): two sgemms on the
//                                                     two contiguous row blocks instead of a strided split
//   rope on kpe (one head);  cn = rmsnorm_kv(c)
//   k[:, h, :dn] = cn·Wkv_b[h, nope]ᵀ,  v[:, h] = cn·Wkv_b[h, v]ᵀ  (per-head sgemm straight into place, ldc stride)
//   k[:, h, dn:] = kpe  (the shared rope key, broadcast to every head)
//   o = attn(q, k, v; scale = softmax_scale) (N, Hh·dv);  out = o·Woᵀ (N, D)

import type { Runtime } from '../runtime.ts';
import type { ParamUnit } from '../params/unit.ts';
import type { MlaSpec } from '../spec.ts';
import { checkRopeLength, type RopeTable } from './rope.ts';
import {
  copyCols,
  linearBwdInput,
  linearBwdWeight,
  linearFwd,
  type Operand,
  releaseOperand,
  releaseRounded,
  roundOnce,
} from './linear.ts';
import { rmsnormBackward, rmsnormForward, type RmsNormCtx } from './rmsnorm.ts';
import { type SdpaSaved, sdpaBackward, sdpaForward, sdpaRelease } from './sdpa.ts';

export interface MlaCtx {
  /** x as the projections read it: its bf16 rounding under bf16 compute (kept for the weight gradients; the block
   *  may then drop x itself), x itself under fp32. */
  xm: Operand;
  B: number;
  S: number;
  /** q-LoRA only: x·Wq_aᵀ (N, qr), its norm ctx, and the normalised values as Wq_b reads them (bf16 under bf16
   *  compute: a product's only use of them, forward and weight gradient, so they are rounded once and kept so). */
  qa: Float32Array | null;
  qaNorm: RmsNormCtx | null;
  qn: Operand | null;
  c: Float32Array;
  cNorm: RmsNormCtx;
  /** The normalised latent as Wkv_b's products read it (bf16 under bf16 compute, as qn). */
  cn: Operand;
  /** What SDPA's backward reads: q, k, v, o (bf16 under bf16 compute) and lse. */
  att: SdpaSaved;
}

export class MlaAttention {
  private readonly n: Record<'wq' | 'wq_a' | 'q_norm' | 'wq_b' | 'wkv_a' | 'kv_norm' | 'wkv_b' | 'wo', string>;

  constructor(
    private readonly unit: ParamUnit,
    prefix: string,
    readonly spec: MlaSpec,
    readonly D: number,
    private readonly rope: RopeTable,
  ) {
    const w = (s: string): string => `${prefix}.${s}.weight`;
    this.n = {
      wq: w('wq'),
      wq_a: w('wq_a'),
      q_norm: w('q_norm'),
      wq_b: w('wq_b'),
      wkv_a: w('wkv_a'),
      kv_norm: w('kv_norm'),
      wkv_b: w('wkv_b'),
      wo: w('wo'),
    };
    const needed = spec.qLoraRank === 0 ? ['wq'] : ['wq_a', 'q_norm', 'wq_b'];
    for (const k of [...needed, 'wkv_a', 'kv_norm', 'wkv_b', 'wo'] as const)
      unit.layout.entry(this.n[k as keyof typeof this.n]);
    if (rope.dim !== spec.qkRope)
      throw new Error(`MlaAttention ${prefix}: RoPE table dim ${rope.dim} ≠ qk_rope_head_dim ${spec.qkRope}`);
  }

  // x (B·S, D) → out (B·S, D) (caller owns)
  forward(rt: Runtime, x: Float32Array, B: number, S: number): { out: Float32Array; ctx: MlaCtx } {
    const { nHeads: Hh, qLoraRank: qr, kvLoraRank: kvr, qkNope: dn, qkRope: dr, vHead: dv, scale, normEps } = this.spec;
    const dqk = dn + dr;
    const N = B * S;
    const D = this.D;
    const u = this.unit;
    const K = rt.k;
    checkRopeLength(this.rope, S);
    const { cos, sin } = this.rope;
    const xm = roundOnce(rt.k, rt.pool, x, N * D);

    const q = rt.pool.get(N * Hh * dqk);
    let qa: Float32Array | null = null;
    let qaNorm: RmsNormCtx | null = null;
    let qn: Operand | null = null;
    if (qr === 0) {
      linearFwd(K, xm, u.p(this.n.wq), q, N, D, Hh * dqk);
    } else {
      qa = rt.pool.get(N * qr);
      linearFwd(K, xm, u.p(this.n.wq_a), qa, N, D, qr);
      const r = rmsnormForward(rt, qa, u.p(this.n.q_norm), N, qr, normEps);
      qn = roundOnce(K, rt.pool, r.out, N * qr);
      if (qn !== r.out) rt.pool.release(r.out);
      qaNorm = r.ctx;
      linearFwd(K, qn, u.p(this.n.wq_b), q, N, qr, Hh * dqk);
    }
    K.rope(q, cos, sin, N, S, Hh, Hh * dqk, dqk, dn, dr, false);

    const wkva = u.p(this.n.wkv_a);
    const c = rt.pool.get(N * kvr);
    const kpe = rt.pool.get(N * dr);
    linearFwd(K, xm, wkva.subarray(0, kvr * D), c, N, D, kvr);
    linearFwd(K, xm, wkva.subarray(kvr * D), kpe, N, D, dr);
    K.rope(kpe, cos, sin, N, S, 1, dr, dr, 0, dr, false);
    const cnr = rmsnormForward(rt, c, u.p(this.n.kv_norm), N, kvr, normEps);
    // Read by 2·Hh products here and one weight gradient: rounded once under bf16 (each product rounded it before).
    const cn = roundOnce(K, rt.pool, cnr.out, N * kvr);
    if (cn !== cnr.out) rt.pool.release(cnr.out);

    const k = rt.pool.get(N * Hh * dqk);
    const v = rt.pool.get(N * Hh * dv);
    const wkvb = u.p(this.n.wkv_b);
    for (let h = 0; h < Hh; h++) {
      const rowK = h * (dn + dv);
      linearFwd(K, cn, wkvb.subarray(rowK * kvr), k.subarray(h * dqk), N, kvr, dn, 0, kvr, Hh * dqk);
      linearFwd(K, cn, wkvb.subarray((rowK + dn) * kvr), v.subarray(h * dv), N, kvr, dv, 0, kvr, Hh * dv);
      copyCols(K, kpe, dr, k.subarray(h * dqk + dn), Hh * dqk, N, dr, 0);
    }
    rt.pool.release(kpe);

    const att = sdpaForward(rt, { B, S, Hq: Hh, Hkv: Hh, dk: dqk, dv, scale }, q, k, v);
    const out = rt.pool.get(N * D);
    linearFwd(K, att.o, u.p(this.n.wo), out, N, Hh * dv, D);
    return { out, ctx: { xm, B, S, qa, qaNorm, qn, c, cNorm: cnr.ctx, cn, att } };
  }

  // dout (B·S, D) → dx (B·S, D) (caller owns); all attention grads +=; releases ctx
  backward(rt: Runtime, ctx: MlaCtx, dout: Float32Array): Float32Array {
    const { nHeads: Hh, qLoraRank: qr, kvLoraRank: kvr, qkNope: dn, qkRope: dr, vHead: dv, scale } = this.spec;
    const dqk = dn + dr;
    const { B, S, xm: x } = ctx;
    const N = B * S;
    const D = this.D;
    const u = this.unit;
    const K = rt.k;
    const { cos, sin } = this.rope;

    const dO = rt.pool.get(N * Hh * dv);
    linearBwdWeight(K, dout, ctx.att.o, u.g(this.n.wo), N, Hh * dv, D);
    linearBwdInput(K, dout, u.p(this.n.wo), dO, N, Hh * dv, D);
    const shape = { B, S, Hq: Hh, Hkv: Hh, dk: dqk, dv, scale };
    const { dq, dk, dv: dvb } = sdpaBackward(rt, shape, ctx.att, dO);
    rt.pool.release(dO);

    // k/v path: the shared rope key collects every head's gradient; the latent collects k_nope's and v's.
    const dkpe = rt.pool.get(N * dr);
    const dcn = rt.pool.get(N * kvr);
    const wkvb = u.p(this.n.wkv_b);
    const gkvb = u.g(this.n.wkv_b);
    for (let h = 0; h < Hh; h++) {
      const rowK = h * (dn + dv);
      const dkh = dk.subarray(h * dqk);
      const dvh = dvb.subarray(h * dv);
      copyCols(K, dk.subarray(h * dqk + dn), Hh * dqk, dkpe, dr, N, dr, h === 0 ? 0 : 1);
      linearBwdInput(K, dkh, wkvb.subarray(rowK * kvr), dcn, N, kvr, dn, h === 0 ? 0 : 1, Hh * dqk, kvr);
      linearBwdInput(K, dvh, wkvb.subarray((rowK + dn) * kvr), dcn, N, kvr, dv, 1, Hh * dv, kvr);
      linearBwdWeight(K, dkh, ctx.cn, gkvb.subarray(rowK * kvr), N, kvr, dn, Hh * dqk, kvr);
      linearBwdWeight(K, dvh, ctx.cn, gkvb.subarray((rowK + dn) * kvr), N, kvr, dv, Hh * dv, kvr);
    }
    rt.pool.release(dk);
    rt.pool.release(dvb);
    releaseOperand(rt.pool, ctx.cn);
    K.rope(dkpe, cos, sin, N, S, 1, dr, dr, 0, dr, true);
    const dc = rmsnormBackward(rt, ctx.cNorm, u.p(this.n.kv_norm), u.g(this.n.kv_norm), dcn);
    rt.pool.release(dcn);
    rt.pool.release(ctx.c);
    const wkva = u.p(this.n.wkv_a);
    const gkva = u.g(this.n.wkv_a);
    const dx = rt.pool.get(N * D);
    linearBwdWeight(K, dc, x, gkva.subarray(0, kvr * D), N, D, kvr);
    linearBwdWeight(K, dkpe, x, gkva.subarray(kvr * D), N, D, dr);
    linearBwdInput(K, dc, wkva.subarray(0, kvr * D), dx, N, D, kvr, 0);
    linearBwdInput(K, dkpe, wkva.subarray(kvr * D), dx, N, D, dr, 1);
    rt.pool.release(dc);
    rt.pool.release(dkpe);

    // q path
    K.rope(dq, cos, sin, N, S, Hh, Hh * dqk, dqk, dn, dr, true);
    if (qr === 0) {
      linearBwdWeight(K, dq, x, u.g(this.n.wq), N, D, Hh * dqk);
      linearBwdInput(K, dq, u.p(this.n.wq), dx, N, D, Hh * dqk, 1);
    } else {
      const dqn = rt.pool.get(N * qr);
      linearBwdWeight(K, dq, ctx.qn!, u.g(this.n.wq_b), N, qr, Hh * dqk);
      linearBwdInput(K, dq, u.p(this.n.wq_b), dqn, N, qr, Hh * dqk);
      releaseOperand(rt.pool, ctx.qn);
      const dqa = rmsnormBackward(rt, ctx.qaNorm!, u.p(this.n.q_norm), u.g(this.n.q_norm), dqn);
      rt.pool.release(dqn);
      rt.pool.release(ctx.qa);
      linearBwdWeight(K, dqa, x, u.g(this.n.wq_a), N, D, qr);
      linearBwdInput(K, dqa, u.p(this.n.wq_a), dx, N, D, qr, 1);
      rt.pool.release(dqa);
    }
    rt.pool.release(dq);
    releaseRounded(rt.pool, ctx.xm);
    return dx;
  }

  release(rt: Runtime, ctx: MlaCtx): void {
    sdpaRelease(rt, ctx.att);
    releaseRounded(rt.pool, ctx.xm);
    releaseOperand(rt.pool, ctx.cn);
    for (const a of [ctx.c, ctx.cNorm.rstd]) rt.pool.release(a);
    if (ctx.qa) {
      rt.pool.release(ctx.qa);
      releaseOperand(rt.pool, ctx.qn);
      rt.pool.release(ctx.qaNorm!.rstd);
    }
  }
}
