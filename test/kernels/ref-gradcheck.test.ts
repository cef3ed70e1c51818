// Validates the TypeScript reference itself, so the property tests compare native code against something known to
// be right: every backward against central finite differences of its own forward, linear maps against their
// adjoints, forwards against independent formulations of the definitions.
//
// The reference reads and writes its arrays only by indexing, so it runs unchanged on Float64Array storage; the
// finite differences below are taken in float64 (h = 1e-5: truncation ≈ h² ≈ 1e-10, rounding ≈ 1e-16/h ≈ 1e-11),
// which allows a tight 1e-6 tolerance. RoPE and AdamW round to float32 on purpose (torch semantics), so they are
// checked with linear-algebra identities and known answers instead.
import { describe, expect, it } from 'vitest';
import { refKernels as K } from '../../src/tensor/kernels.ts';
import { randF32, randF64, randInts, rng } from './helpers.ts';

const f32 = (a: Float64Array) => a as unknown as Float32Array;

/** Central differences at `count` random coordinates of `x`, against the analytic gradient `g`. */
function gradCheck(
  what: string,
  x: Float64Array,
  g: Float64Array,
  loss: () => number,
  r: () => number,
  count = 16,
): void {
  let gmax = 0;
  for (const v of g) gmax = Math.max(gmax, Math.abs(v));
  const h = 1e-5;
  const n = Math.min(count, x.length);
  for (let c = 0; c < n; c++) {
    const i = x.length <= count ? c : Math.floor(r() * x.length);
    const v = x[i]!;
    x[i] = v + h;
    const lp = loss();
    x[i] = v - h;
    const lm = loss();
    x[i] = v;
    const fd = (lp - lm) / (2 * h);
    const err = Math.abs(fd - g[i]!) / Math.max(gmax, 1e-3);
    if (!(err <= 1e-6))
      expect.fail(`${what}[${i}]: finite difference ${fd} vs analytic ${g[i]} (rel ${err.toExponential(2)})`);
  }
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

describe('reference kernels: backward = gradient of forward', () => {
  it('attention (GQA 4:2, dk ≠ dv, several positions)', () => {
    const r = rng(11);
    const [B, S, Hq, Hkv, dk, dv] = [2, 7, 4, 2, 5, 3];
    const scale = 1 / Math.sqrt(dk);
    const q = randF64(B * S * Hq * dk, r, 1.5);
    const k = randF64(B * S * Hkv * dk, r, 1.5);
    const v = randF64(B * S * Hkv * dv, r);
    const go = randF64(B * S * Hq * dv, r);
    const o = new Float64Array(go.length);
    const lse = new Float64Array(B * Hq * S);
    const loss = () => {
      K.attentionFwd(f32(q), f32(k), f32(v), f32(o), f32(lse), B, S, Hq, Hkv, dk, dv, scale);
      return dot(o, go);
    };
    loss();
    const dq = new Float64Array(q.length);
    const dkk = new Float64Array(k.length);
    const dvv = new Float64Array(v.length);
    K.attentionBwd(
      f32(go),
      f32(q),
      f32(k),
      f32(v),
      f32(o),
      f32(lse),
      f32(dq),
      f32(dkk),
      f32(dvv),
      B,
      S,
      Hq,
      Hkv,
      dk,
      dv,
      scale,
    );
    gradCheck('dq', q, dq, loss, r, 40);
    gradCheck('dk', k, dkk, loss, r, 40);
    gradCheck('dv', v, dvv, loss, r, 40);
  });

  it('rmsnorm (dx and dw)', () => {
    const r = rng(12);
    const [N, D, eps] = [5, 9, 1e-5];
    const x = randF64(N * D, r, 2);
    const w = randF64(D, r);
    const gy = randF64(N * D, r);
    const y = new Float64Array(N * D);
    const rstd = new Float64Array(N);
    const loss = () => {
      K.rmsnormFwd(f32(x), f32(w), f32(y), f32(rstd), N, D, eps);
      return dot(y, gy);
    };
    loss();
    const dx = new Float64Array(N * D);
    const dw = new Float64Array(D);
    K.rmsnormBwd(f32(gy), f32(x), f32(w), f32(rstd), f32(dx), f32(dw), N, D);
    gradCheck('dx', x, dx, loss, r, 45);
    gradCheck('dw', w, dw, loss, r);
  });

  it('swiglu (da and db)', () => {
    const r = rng(13);
    const n = 30;
    const a = randF64(n, r, 6);
    const b = randF64(n, r);
    const gh = randF64(n, r);
    const h = new Float64Array(n);
    const loss = () => {
      K.swigluFwd(f32(a), f32(b), f32(h), n);
      return dot(h, gh);
    };
    const da = new Float64Array(n);
    const db = new Float64Array(n);
    K.swigluBwd(f32(gh), f32(a), f32(b), f32(da), f32(db), n);
    gradCheck('da', a, da, loss, r, n);
    gradCheck('db', b, db, loss, r, n);
  });

  it('cross-entropy (scaled, with ignored rows)', () => {
    const r = rng(14);
    const [N, V] = [6, 11];
    const logits = randF64(N * V, r, 3);
    const labels = randInts(N, V, r);
    labels[2] = -100;
    labels[5] = -100;
    const scale = 1 / 4; // 1 / valid tokens, as the trainer passes it
    const lse = new Float64Array(N);
    const loss = () => scale * K.crossEntropyFwd(f32(logits), labels, f32(lse), N, V);
    loss();
    const dl = new Float64Array(N * V);
    K.crossEntropyBwd(f32(logits), labels, f32(lse), f32(dl), N, V, scale);
    gradCheck('dlogits', logits, dl, loss, r, N * V);
    for (let j = 0; j < V; j++) expect(dl[2 * V + j]).toBe(0);
    expect(lse[2]).toBe(0);
  });

  it('gatherRowDot is the gradient of gatherRows with respect to the gate scale', () => {
    const r = rng(15);
    const [T, R, D] = [4, 7, 5];
    const src = randF64(T * D, r);
    const idx = randInts(R, T, r);
    const gate = randF64(R, r);
    const gOut = randF64(R * D, r);
    const out = new Float64Array(R * D);
    const loss = () => {
      K.gatherRows(f32(src), idx, f32(out), R, D, f32(gate));
      return dot(out, gOut);
    };
    const dGate = new Float64Array(R);
    K.gatherRowDot(f32(src), idx, f32(gOut), f32(dGate), R, D);
    gradCheck('dgate', gate, dGate, loss, r, R);
  });
});

describe('reference kernels: linear maps and their adjoints', () => {
  it('scatterAddRows is the adjoint of gatherRows (with gate scale, repeated indices)', () => {
    const r = rng(21);
    const [T, R, D] = [5, 12, 6];
    const x = randF64(T * D, r);
    const y = randF64(R * D, r);
    const idx = randInts(R, T, r);
    const gate = randF64(R, r);
    const gx = new Float64Array(R * D);
    K.gatherRows(f32(x), idx, f32(gx), R, D, f32(gate));
    const sy = new Float64Array(T * D);
    K.scatterAddRows(f32(y), idx, f32(sy), R, D, f32(gate));
    expect(Math.abs(dot(gx, y) - dot(x, sy))).toBeLessThan(1e-12);
  });

  it('embeddingBwd is the adjoint of embeddingFwd (repeated ids)', () => {
    const r = rng(22);
    const [V, N, D] = [4, 10, 3];
    const table = randF64(V * D, r);
    const ids = randInts(N, V, r);
    const gy = randF64(N * D, r);
    const y = new Float64Array(N * D);
    K.embeddingFwd(f32(table), ids, f32(y), N, D);
    const gt = new Float64Array(V * D);
    K.embeddingBwd(f32(gy), ids, f32(gt), N, D);
    expect(Math.abs(dot(y, gy) - dot(table, gt))).toBeLessThan(1e-12);
  });

  it('rope: inverse is the adjoint (= backward) and undoes the rotation; forward is the complex product', () => {
    const r = rng(23);
    const [Bb, S, heads, dim, extra] = [2, 5, 3, 8, 4];
    const half = dim / 2;
    const headStride = extra + dim;
    const rowStride = heads * headStride;
    const rows = Bb * S;
    // Real angles, as the model builds them: φ[p,i] = p·f_i.
    const cos = new Float32Array(S * half);
    const sin = new Float32Array(S * half);
    for (let p = 0; p < S; p++)
      for (let i = 0; i < half; i++) {
        const phi = p * Math.pow(10000, (-2 * i) / dim);
        cos[p * half + i] = Math.cos(phi);
        sin[p * half + i] = Math.sin(phi);
      }
    const x = randF32(rows * rowStride, r);
    const y = randF32(rows * rowStride, r);
    const rx = x.slice();
    K.rope(rx, cos, sin, rows, S, heads, rowStride, headStride, extra, dim, false);
    const ry = y.slice();
    K.rope(ry, cos, sin, rows, S, heads, rowStride, headStride, extra, dim, true);
    expect(Math.abs(dot(rx, y) - dot(x, ry))).toBeLessThan(1e-5 * Math.sqrt(x.length));
    const back = rx.slice();
    K.rope(back, cos, sin, rows, S, heads, rowStride, headStride, extra, dim, true);
    for (let i = 0; i < x.length; i++) expect(back[i]).toBeCloseTo(x[i]!, 6);
    for (let row = 0; row < rows; row++) {
      const p = row % S;
      for (let h = 0; h < heads; h++) {
        const base = row * rowStride + h * headStride;
        for (let e = 0; e < extra; e++) expect(rx[base + e]).toBe(x[base + e]); // the nope part is untouched
        for (let i = 0; i < half; i++) {
          // (x0 + i·x1)·(cos φ + i·sin φ)
          const [x0, x1] = [x[base + extra + 2 * i]!, x[base + extra + 2 * i + 1]!];
          const [c, s] = [cos[p * half + i]!, sin[p * half + i]!];
          expect(rx[base + extra + 2 * i]).toBeCloseTo(x0 * c - x1 * s, 6);
          expect(rx[base + extra + 2 * i + 1]).toBeCloseTo(x0 * s + x1 * c, 6);
        }
      }
    }
  });
});

describe('reference kernels: forwards against independent formulations', () => {
  it('attention forward equals softmax(mask(QKᵀ·scale))·V with repeat-interleaved kv heads', () => {
    const r = rng(31);
    const [B, S, Hq, Hkv, dk, dv] = [1, 6, 6, 3, 4, 5];
    const scale = 0.37;
    const q = randF64(B * S * Hq * dk, r);
    const k = randF64(B * S * Hkv * dk, r);
    const v = randF64(B * S * Hkv * dv, r);
    const o = new Float64Array(B * S * Hq * dv);
    const lse = new Float64Array(B * Hq * S);
    K.attentionFwd(f32(q), f32(k), f32(v), f32(o), f32(lse), B, S, Hq, Hkv, dk, dv, scale);
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / (Hq / Hkv)); // torch repeat_interleave of kv heads
      for (let i = 0; i < S; i++) {
        const s = Array.from({ length: S }, (_, j) => {
          if (j > i) return -Infinity;
          let d = 0;
          for (let c = 0; c < dk; c++) d += q[(i * Hq + h) * dk + c]! * k[(j * Hkv + hk) * dk + c]!;
          return d * scale;
        });
        const e = s.map(Math.exp);
        const z = e.reduce((a, b) => a + b, 0);
        expect(lse[h * S + i]).toBeCloseTo(Math.log(z), 12);
        for (let c = 0; c < dv; c++) {
          let acc = 0;
          for (let j = 0; j < S; j++) acc += (e[j]! / z) * v[(j * Hkv + hk) * dv + c]!;
          expect(o[(i * Hq + h) * dv + c]).toBeCloseTo(acc, 12);
        }
      }
    }
  });

  it('sgemm: transposed operands equal explicit transposes; beta = 0 ignores NaN in C', () => {
    const r = rng(32);
    const [M, N, Kd] = [3, 4, 5];
    const A = randF32(M * Kd, r);
    const B = randF32(Kd * N, r);
    const At = new Float32Array(Kd * M);
    const Bt = new Float32Array(N * Kd);
    for (let i = 0; i < M; i++) for (let p = 0; p < Kd; p++) At[p * M + i] = A[i * Kd + p]!;
    for (let p = 0; p < Kd; p++) for (let j = 0; j < N; j++) Bt[j * Kd + p] = B[p * N + j]!;
    const c1 = new Float32Array(M * N).fill(NaN);
    const c2 = new Float32Array(M * N).fill(NaN);
    K.sgemm(false, false, M, N, Kd, 1, A, Kd, B, N, 0, c1, N);
    K.sgemm(true, true, M, N, Kd, 1, At, M, Bt, Kd, 0, c2, N);
    for (let i = 0; i < M * N; i++) expect(c2[i]).toBeCloseTo(c1[i]!, 6);
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let p = 0; p < Kd; p++) s += A[i * Kd + p]! * B[p * N + j]!;
        expect(c1[i * N + j]).toBeCloseTo(s, 6);
      }
  });

  it('adamw: first step from zero state moves each weight by lr·sign(g) after decay; later steps follow the formula', () => {
    const r = rng(33);
    const n = 50;
    const [lr, b1, b2, eps, wd] = [1e-2, 0.9, 0.95, 1e-8, 0.1];
    const p0 = randF32(n, r);
    const p = p0.slice();
    const m = new Float32Array(n);
    const v = new Float32Array(n);
    const g1 = randF32(n, r);
    K.adamw(p, g1, m, v, n, lr, b1, b2, eps, wd, 1);
    for (let i = 0; i < n; i++)
      expect(p[i]).toBeCloseTo(p0[i]! * (1 - lr * wd) - (lr * g1[i]!) / (Math.abs(g1[i]!) + eps), 6);
    // Step 2 against the formula in float64 (the reference rounds to float32 at torch's points: ≈1e-7 relative).
    const [pd, md, vd] = [Float64Array.from(p), Float64Array.from(m), Float64Array.from(v)];
    const g2 = randF32(n, r);
    K.adamw(p, g2, m, v, n, lr, b1, b2, eps, wd, 2);
    for (let i = 0; i < n; i++) {
      const mm = b1 * md[i]! + (1 - b1) * g2[i]!;
      const vv = b2 * vd[i]! + (1 - b2) * g2[i]! ** 2;
      const pp = pd[i]! * (1 - lr * wd) - (lr / (1 - b1 ** 2)) * (mm / (Math.sqrt(vv) / Math.sqrt(1 - b2 ** 2) + eps));
      expect(Math.abs(m[i]! - mm)).toBeLessThan(1e-7); // terms ≤ 0.2: a few float32 ulps, even where they cancel
      expect(Math.abs(p[i]! - pp)).toBeLessThan(1e-6);
    }
  });
});
