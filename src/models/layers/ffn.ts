// SwiGLU feed-forward without biases: y = (silu(x·W1ᵀ) ⊙ (x·W3ᵀ))·W2ᵀ, with w1, w3 (H,D) and w2 (D,H).
// The core pair (swigluFfnForward/Backward on raw weight arrays) serves the dense FFN, the shared experts and
// each routed expert (weights = one expert's slice of the (L,H,D) tensors).

import type { Kernels } from '../../tensor/kernels-api.ts';
import type { ActivationPool } from '../pool.ts';
import type { Runtime } from '../runtime.ts';
import type { ParamUnit } from '../params/unit.ts';
import { linearBwdInput, linearBwdWeight, linearFwd, type Operand, releaseRounded, roundOnce } from './linear.ts';

// With a pool, an operand read by two products is rounded to bf16 once (under bf16 compute; linear.ts).
function shared(k: Kernels, pool: ActivationPool | undefined, x: Float32Array, n: number): Operand {
  return pool ? roundOnce(k, pool, x, n) : x;
}
function unshare(pool: ActivationPool | undefined, op: Operand): void {
  if (pool) releaseRounded(pool, op);
}

export interface SwigluWeights {
  w1: Float32Array;
  w2: Float32Array;
  w3: Float32Array;
}

// x (n,D) → h1, h3, act (n,H) write; y (n,D) write
export function swigluFfnForward(
  k: Kernels,
  w: SwigluWeights,
  x: Float32Array,
  n: number,
  D: number,
  H: number,
  h1: Float32Array,
  h3: Float32Array,
  act: Float32Array,
  y: Float32Array,
  pool?: ActivationPool,
): void {
  if (n === 0) return;
  const xm = shared(k, pool, x, n * D);
  linearFwd(k, xm, w.w1, h1, n, D, H);
  linearFwd(k, xm, w.w3, h3, n, D, H);
  unshare(pool, xm);
  k.swigluFwd(h1, h3, act, n * H);
  linearFwd(k, act, w.w2, y, n, H, D);
}

// dy (n,D) with the forward's x, h1, h3, act → dx (n,D) write; dW1, dW3 (H,D), dW2 (D,H) +=.
// Scratch: `dh` (n,H) is overwritten; `act` is overwritten (it becomes dh3 once dW2 has used it).
export function swigluFfnBackward(
  k: Kernels,
  w: SwigluWeights,
  g: SwigluWeights,
  x: Float32Array,
  n: number,
  D: number,
  H: number,
  h1: Float32Array,
  h3: Float32Array,
  act: Float32Array,
  dy: Float32Array,
  dh: Float32Array,
  dx: Float32Array,
  pool?: ActivationPool,
): void {
  if (n === 0) return;
  const dym = shared(k, pool, dy, n * D);
  linearBwdWeight(k, dym, act, g.w2, n, H, D);
  linearBwdInput(k, dym, w.w2, dh, n, H, D);
  unshare(pool, dym);
  // dh → d(h1) in place, d(h3) into act's storage.
  k.swigluBwd(dh, h1, h3, dh, act, n * H);
  const xm = shared(k, pool, x, n * D);
  const dh1 = shared(k, pool, dh, n * H);
  const dh3 = shared(k, pool, act, n * H);
  linearBwdWeight(k, dh1, xm, g.w1, n, D, H);
  linearBwdWeight(k, dh3, xm, g.w3, n, D, H);
  linearBwdInput(k, dh1, w.w1, dx, n, D, H, 0);
  linearBwdInput(k, dh3, w.w3, dx, n, D, H, 1);
  unshare(pool, xm);
  unshare(pool, dh1);
  unshare(pool, dh3);
}

export interface FfnCtx {
  x: Float32Array;
  N: number;
  h1: Float32Array;
  h3: Float32Array;
  act: Float32Array;
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

  // x (N,D) → out (N,D) (caller owns)
  forward(rt: Runtime, x: Float32Array, N: number): { out: Float32Array; ctx: FfnCtx } {
    const { D, H } = this;
    const h1 = rt.pool.get(N * H);
    const h3 = rt.pool.get(N * H);
    const act = rt.pool.get(N * H);
    const out = rt.pool.get(N * D);
    swigluFfnForward(rt.k, this.weights(), x, N, D, H, h1, h3, act, out, rt.pool);
    return { out, ctx: { x, N, h1, h3, act } };
  }

  // dout (N,D) → dx (N,D) (caller owns); releases ctx
  backward(rt: Runtime, ctx: FfnCtx, dout: Float32Array): Float32Array {
    const { D, H } = this;
    const dh = rt.pool.get(ctx.N * H);
    const dx = rt.pool.get(ctx.N * D);
    swigluFfnBackward(
      rt.k,
      this.weights(),
      this.grads(),
      ctx.x,
      ctx.N,
      D,
      H,
      ctx.h1,
      ctx.h3,
      ctx.act,
      dout,
      dh,
      dx,
      rt.pool,
    );
    rt.pool.release(dh);
    this.release(rt, ctx);
    return dx;
  }

  release(rt: Runtime, ctx: FfnCtx): void {
    rt.pool.release(ctx.h1);
    rt.pool.release(ctx.h3);
    rt.pool.release(ctx.act);
  }
}
