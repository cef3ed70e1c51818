// Parameter init as torchtitan's init_weights (per-parameter std, depth-scaled init_std, trunc_normal with absolute
// bounds, output ±3·std, norms = 1), from a seeded RNG of our own: torch's stream cannot be reproduced bitwise
// (torchtitan-semantics.md §8.15), so parity tests load identical weights instead.
//
// Each parameter draws from its own stream keyed by (seed, name), and each routed expert from (seed, name, expert
// id): an EP shard holding experts [e0, e0+L) initialises exactly the rows the full model has there, and an FSDP
// rank can initialise any parameter without drawing the ones before it.

import type { InitSpec } from '../spec.ts';
import type { ParamUnit } from './unit.ts';

/** cyrb128: a string → four 32-bit seeds, well mixed. */
function hash128(str: string): [number, number, number, number] {
  let h1 = 1779033703,
    h2 = 3144134277,
    h3 = 1013904242,
    h4 = 2773480762;
  for (let i = 0; i < str.length; i++) {
    const k = str.charCodeAt(i);
    h1 = h2 ^ Math.imul(h1 ^ k, 597399067);
    h2 = h3 ^ Math.imul(h2 ^ k, 2869860233);
    h3 = h4 ^ Math.imul(h3 ^ k, 951274213);
    h4 = h1 ^ Math.imul(h4 ^ k, 2716044179);
  }
  h1 = Math.imul(h3 ^ (h1 >>> 18), 597399067);
  h2 = Math.imul(h4 ^ (h2 >>> 22), 2869860233);
  h3 = Math.imul(h1 ^ (h3 >>> 17), 951274213);
  h4 = Math.imul(h2 ^ (h4 >>> 19), 2716044179);
  h1 ^= h2 ^ h3 ^ h4;
  h2 ^= h1;
  h3 ^= h1;
  h4 ^= h1;
  return [h1 >>> 0, h2 >>> 0, h3 >>> 0, h4 >>> 0];
}

/** xoshiro128** with Box–Muller normals. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | null = null;

  constructor(key: string) {
    [this.s0, this.s1, this.s2, this.s3] = hash128(key);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r;
  }

  /** Uniform in (0, 1), 53 bits. */
  uniform(): number {
    const hi = this.nextU32() >>> 5;
    const lo = this.nextU32() >>> 6;
    return (hi * 67108864 + lo + 0.5) / 9007199254740992;
  }

  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

export function fillInit(out: Float32Array, init: InitSpec, rng: Rng): void {
  switch (init.kind) {
    case 'ones':
      out.fill(1);
      return;
    case 'zeros':
      out.fill(0);
      return;
    case 'normal':
      for (let i = 0; i < out.length; i++) out[i] = init.std * rng.normal();
      return;
    case 'trunc_normal':
      // Rejection sampling inside the absolute bounds [a, b] (torch's trunc_normal_ defaults a=−2, b=2).
      for (let i = 0; i < out.length; i++) {
        let x: number;
        do x = init.std * rng.normal();
        while (x < init.a || x > init.b);
        out[i] = x;
      }
      return;
  }
}

/** Initialises every parameter of the unit (its local experts only, for an EP shard). */
export function initUnit(unit: ParamUnit, seed: number): void {
  const start = unit.layout.experts?.start ?? 0;
  for (const e of unit.layout.entries) {
    const view = unit.p(e.name);
    if (!e.expert) {
      fillInit(view, e.init, new Rng(`${seed}/${e.name}`));
      continue;
    }
    const L = e.shape[0]!;
    const per = e.numel / L;
    for (let l = 0; l < L; l++) {
      fillInit(view.subarray(l * per, (l + 1) * per), e.init, new Rng(`${seed}/${e.name}/${start + l}`));
    }
  }
}
