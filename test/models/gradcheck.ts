// Finite-difference gradient checks for the layers. Everything runs in float32 (the kernel contract), so instead of
// element-wise differences the check uses directional derivatives: for a random direction u per tensor,
//   (L(θ + εu) − L(θ − εu)) / 2ε  ≈  ⟨∇L, u⟩,   L = Σ out · R  (R fixed random, summed in double)
// which averages fp32 noise over the whole tensor. It is run for several directions and, for small tensors, also
// per element. A wrong backward (missing term, transposed weight, wrong scale) is off by O(1), far above the noise.

import { Allocator } from '../../src/tensor/allocator.ts';
import { refKernels } from '../../src/tensor/kernels.ts';
import { Rng } from '../../src/models/params/init.ts';
import { createRuntime, type Runtime } from '../../src/models/runtime.ts';
import { ParamUnit, UnitLayout } from '../../src/models/params/unit.ts';
import type { ParamSpec } from '../../src/models/spec.ts';

export function runtime(): Runtime {
  return createRuntime(refKernels, new Allocator());
}

export function randn(n: number, seed: string, std = 1): Float32Array {
  const r = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = std * r.normal();
  return a;
}

/** A unit with the given (name, shape) params, filled with N(0, std²) (norm weights around 1). */
export function makeUnit(params: [string, number[]][], seed: string, std = 0.3): ParamUnit {
  const specs: ParamSpec[] = params.map(([name, shape]) => ({
    name,
    shape,
    unit: 'u',
    init: { kind: 'normal', std },
    expert: false,
  }));
  const u = new ParamUnit(new UnitLayout('u', specs), new Allocator());
  for (const [name] of params) {
    const v = u.p(name);
    const r = randn(v.length, `${seed}/${name}`, std);
    if (name.includes('norm')) for (let i = 0; i < v.length; i++) v[i] = 1 + r[i]!;
    else v.set(r);
  }
  return u;
}

export interface Probe {
  name: string;
  data: Float32Array;
  /** The analytic gradient (read after `grads()` ran). */
  grad: () => Float32Array;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

export interface CheckResult {
  name: string;
  fd: number;
  an: number;
  rel: number;
}

/**
 * `loss()` runs the forward and returns L; `grads()` runs forward + backward (dout = R) filling the probes' grads
 * (accumulating grads must be zeroed inside). Returns one result per probe and direction.
 */
export function directionalCheck(
  loss: () => number,
  grads: () => void,
  probes: Probe[],
  opts: { eps?: number; directions?: number; seed?: string } = {},
): CheckResult[] {
  const eps = opts.eps ?? 1e-3;
  const dirs = opts.directions ?? 2;
  grads();
  const analytic = probes.map((p) => Float64Array.from(p.grad()));
  const gnorm = analytic.map((g) => Math.sqrt(dot(g, g)));
  const out: CheckResult[] = [];
  probes.forEach((p, pi) => {
    for (let d = 0; d < dirs; d++) {
      const u = randn(p.data.length, `${opts.seed ?? 'dir'}/${p.name}/${d}`);
      const saved = Float32Array.from(p.data);
      const plus = Float32Array.from(saved, (v, i) => v + eps * u[i]!);
      const minus = Float32Array.from(saved, (v, i) => v - eps * u[i]!);
      p.data.set(plus);
      const lp = loss();
      p.data.set(minus);
      const lm = loss();
      p.data.set(saved);
      // The step actually taken after float32 rounding of θ ± εu.
      let an = 0;
      const g = analytic[pi]!;
      for (let i = 0; i < u.length; i++) an += (g[i]! * (plus[i]! - minus[i]!)) / 2;
      const fd = (lp - lm) / 2;
      // For u ~ N(0, I), |⟨g, u⟩| is typically ‖g‖: a direction almost orthogonal to g is judged against ‖g‖, not
      // against its own tiny projection (which fp32 noise would dominate).
      const scale = Math.max(Math.abs(an / eps), Math.abs(fd / eps), gnorm[pi]!, 1e-12);
      out.push({ name: p.name, fd: fd / eps, an: an / eps, rel: Math.abs(fd - an) / eps / scale });
    }
  });
  return out;
}
