// SwiGLU feed-forward without biases: y = (silu(x·W1ᵀ) ⊙ (x·W3ᵀ))·W2ᵀ, with w1, w3 (H,D) and w2 (D,H).
// The core pair (swigluFfnForward/Backward on raw weight arrays) serves the dense FFN, the shared experts and
// each routed expert (weights = one expert's slice of the (L,H,D) tensors).
//
// Under bf16 compute what the FFN keeps for backward is bf16, as torch's bf16 linears produce it: the w1 and w3
// products write their outputs h1, h3 rounded (sgemmBf16 into a Uint16Array), the gate act = silu(h1)·h3 is
// rounded once (w2's input in both passes), and backward's d(h1), d(h3) come out of the gate's backward in bf16
// (each is read by two products). Under fp32 the same buffers are f32.

import type { Kernels } from '../../tensor/kernels-api.ts';
import type { ActivationPool } from '../pool.ts';
import type { Runtime } from '../runtime.ts';
import type { ParamUnit } from '../params/unit.ts';
import { paramDtypeOf } from '../../tensor/precision.ts';
import {
  linearBwdInput,
  linearBwdWeight,
  linearFwd,
  type Operand,
  releaseOperand,
  releaseRounded,
  roundOnce,
} from './linear.ts';

// With a pool, an operand read by two products is rounded to bf16 once (under bf16 compute; linear.ts). An operand
// that arrives as bf16 (the routed experts round all their rows in one call) is used as it is, and not released.
function shared(k: Kernels, pool: ActivationPool | undefined, x: Operand, n: number): Operand {
  return pool && x instanceof Float32Array ? roundOnce(k, pool, x, n) : x;
}
function unshare(pool: ActivationPool | undefined, op: Operand, source: Operand): void {
  if (pool && op !== source) releaseRounded(pool, op);
}

export interface SwigluWeights {
  w1: Float32Array;
  w2: Float32Array;
  w3: Float32Array;
}

/** What a SwiGLU FFN keeps for backward: the w1 and w3 outputs and their gate (n,H) each, bf16 under bf16 compute. */
export interface SwigluActs {
  h1: Operand;
  h3: Operand;
  act: Operand;
}

/** Pooled buffers for n rows' SwigluActs, in the storage dtype of `rt`'s compute dtype. */
export function swigluActs(rt: Runtime, n: number): SwigluActs {
  if (paramDtypeOf(rt.k) === 'bfloat16') return { h1: rt.pool.u16(n), h3: rt.pool.u16(n), act: rt.pool.u16(n) };
  return { h1: rt.pool.get(n), h3: rt.pool.get(n), act: rt.pool.get(n) };
}

export function releaseSwigluActs(rt: Runtime, a: SwigluActs): void {
  for (const b of [a.h1, a.h3, a.act]) releaseOperand(rt.pool, b);
}

/** Rows from `start` (elements) of each buffer: one expert's share of the experts' SwigluActs. */
export function sliceSwigluActs(a: SwigluActs, start: number): SwigluActs {
  return { h1: a.h1.subarray(start), h3: a.h3.subarray(start), act: a.act.subarray(start) };
}

// x (n,D; f32, or bf16 already rounded) → acts.h1, h3, act (n,H) write; y (n,D) write
export function swigluFfnForward(
  k: Kernels,
  w: SwigluWeights,
  x: Operand,
  n: number,
  D: number,
  H: number,
  acts: SwigluActs,
  y: Float32Array,
  pool?: ActivationPool,
): void {
  if (n === 0) return;
  const { h1, h3, act } = acts;
  const xm = shared(k, pool, x, n * D);
  linearFwd(k, xm, w.w1, h1, n, D, H);
  linearFwd(k, xm, w.w3, h3, n, D, H);
  unshare(pool, xm, x);
  if (h1 instanceof Uint16Array && h3 instanceof Uint16Array && act instanceof Uint16Array)
    k.swigluFwdBf16(h1, h3, act, n * H);
  else if (h1 instanceof Float32Array && h3 instanceof Float32Array && act instanceof Float32Array)
    k.swigluFwd(h1, h3, act, n * H);
  else throw new Error('swigluFfnForward: h1, h3 and act must share one storage dtype (swigluActs makes them)');
  linearFwd(k, act, w.w2, y, n, H, D);
}

// dy (n,D) with the forward's x and acts → dx (n,D) write; dW1, dW3 (H,D), dW2 (D,H) +=.
// Scratch: `dh` (n,H) is overwritten; f32 acts.act is overwritten (it becomes d(h3) once dW2 has used it).
export function swigluFfnBackward(
  k: Kernels,
  w: SwigluWeights,
  g: SwigluWeights,
  x: Operand,
  n: number,
  D: number,
  H: number,
  acts: SwigluActs,
  dy: Operand,
  dh: Float32Array,
  dx: Float32Array,
  pool?: ActivationPool,
): void {
  if (n === 0) return;
  const { h1, h3, act } = acts;
  const dym = shared(k, pool, dy, n * D);
  linearBwdWeight(k, dym, act, g.w2, n, H, D);
  linearBwdInput(k, dym, w.w2, dh, n, H, D);
  unshare(pool, dym, dy);
  const xm = shared(k, pool, x, n * D);
  let dh1: Operand;
  let dh3: Operand;
  if (h1 instanceof Uint16Array && h3 instanceof Uint16Array) {
    // d(h1), d(h3) straight to bf16: the two products each feeds read them as they are.
    dh1 = pool ? pool.u16(n * H) : new Uint16Array(n * H);
    dh3 = pool ? pool.u16(n * H) : new Uint16Array(n * H);
    k.swigluBwdBf16(dh, h1, h3, dh1, dh3, n * H);
  } else if (h1 instanceof Float32Array && h3 instanceof Float32Array && act instanceof Float32Array) {
    // dh → d(h1) in place, d(h3) into act's storage.
    k.swigluBwd(dh, h1, h3, dh, act, n * H);
    dh1 = shared(k, pool, dh, n * H);
    dh3 = shared(k, pool, act, n * H);
  } else throw new Error('swigluFfnBackward: h1, h3 and act must share one storage dtype (swigluActs makes them)');
  linearBwdWeight(k, dh1, xm, g.w1, n, D, H);
  linearBwdWeight(k, dh3, xm, g.w3, n, D, H);
  linearBwdInput(k, dh1, w.w1, dx, n, D, H, 0);
  linearBwdInput(k, dh3, w.w3, dx, n, D, H, 1);
  unshare(pool, xm, x);
  unshare(pool, dh1, dh);
  unshare(pool, dh3, act);
}

export interface FfnCtx {
  /** The input, not owned (the block's xn2: bf16 under bf16 compute, as its norm wrote it). */
  x: Operand;
  N: number;
  acts: SwigluActs;
}

/** FeedForward (dense FFN, DSV3 dense layer, shared experts) bound to its parameters `${prefix}.w{1,2,3}.weight`. */
export class FeedForward {
  constructor(
    private readonly unit: ParamUnit,
    readonly prefix: string,
    readonly D: number,
    readonly H: number,
  ) {
    for (const i of [1, 2, 3]) unit.layout.entry(`${prefix}.w${i}.weight`);
  }

  private weights(): SwigluWeights {
    const u = this.unit;
    return {
      w1: u.p(`${this.prefix}.w1.weight`),
      w2: u.p(`${this.prefix}.w2.weight`),
      w3: u.p(`${this.prefix}.w3.weight`),
    };
  }

  private grads(): SwigluWeights {
    const u = this.unit;
    return {
      w1: u.g(`${this.prefix}.w1.weight`),
      w2: u.g(`${this.prefix}.w2.weight`),
      w3: u.g(`${this.prefix}.w3.weight`),
    };
  }

  // x (N,D; f32, or bf16 as its norm wrote it) → out (N,D) (caller owns)
  forward(rt: Runtime, x: Operand, N: number): { out: Float32Array; ctx: FfnCtx } {
    const { D, H } = this;
    const acts = swigluActs(rt, N * H);
    const out = rt.pool.get(N * D);
    swigluFfnForward(rt.k, this.weights(), x, N, D, H, acts, out, rt.pool);
    return { out, ctx: { x, N, acts } };
  }

  // dout (N,D) → dx (N,D) (caller owns); releases ctx
  backward(rt: Runtime, ctx: FfnCtx, dout: Float32Array): Float32Array {
    const { D, H } = this;
    const dh = rt.pool.get(ctx.N * H);
    const dx = rt.pool.get(ctx.N * D);
    swigluFfnBackward(rt.k, this.weights(), this.grads(), ctx.x, ctx.N, D, H, ctx.acts, dout, dh, dx, rt.pool);
    rt.pool.release(dh);
    this.release(rt, ctx);
    return dx;
  }

  release(rt: Runtime, ctx: FfnCtx): void {
    releaseSwigluActs(rt, ctx.acts);
  }
}
