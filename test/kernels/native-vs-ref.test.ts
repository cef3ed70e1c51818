// Property tests: the native addon against the TypeScript reference on random shapes and data, including the edge
// cases the model produces (experts with zero tokens, length-1 sequences, widths that are not multiples of the
// 16-lane vectors, GQA groups, MLA's dk ≠ dv, ignored labels, repeated ids, dlogits aliasing logits).
//
// Tolerances (max-abs error over max-abs of the reference, see helpers.relErr):
//   exact      copies and permutations; RoPE and AdamW, whose native code disables FMA contraction so it rounds
//              like torch, and whose reference emulates those float32 roundings with Math.fround;
//   1e-6       single float32 operations where only the rounding of a scalar differs (axpy, scale, scatter-add);
//   1e-5       float32 reductions over ≤ a few thousand terms against float64 reference sums, and the vectorised
//              exp (≈2 ulp): RMSNorm, SwiGLU, cross-entropy, sgemm, row dots;
//   1e-4       attention: float32 online softmax with per-block rescaling, and a backward whose dK/dV/dQ sum up to
//              S·G products with cancellation (dS has both signs) — still 10× inside the project's gradient contract.
//   1e-2       bf16 attention: both sides round P and dS to bf16 (2⁻⁹ relative), but at different points (the
//              native online softmax rounds exp(s − running max) per key block, the reference exp(s − row max)),
//              and o to bf16 (one bf16 ulp is 2⁻⁸ relative); a wrong pair layout is off by O(1).
import { describe, expect, it, onTestFinished } from 'vitest';
import fc from 'fast-check';
import { nativeKernels, refKernels } from '../../src/tensor/kernels.ts';
import { expectClose, expectExact, randF32, randInts, rng } from './helpers.ts';

const N = nativeKernels();
const R = refKernels;
// KERNELS_TEST_RUNS=500 for a longer soak; the default keeps the whole kernels suite well under a minute.
const RUNS = { numRuns: Number(process.env.KERNELS_TEST_RUNS ?? 40) };

const width = fc.constantFrom(1, 2, 7, 16, 17, 33, 64, 100);
const rows = fc.constantFrom(0, 1, 3, 8, 31, 65);
const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

describe('native kernels match the reference', () => {
  // Both matmul libraries of the native addon (oneDNN where built in, and the CBLAS) meet the same contract.
  it.each(['blas', 'onednn'] as const)('sgemm on %s (all transposes, strided, beta ≠ 0)', (lib) => {
    N.setMatmulLibrary(lib);
    onTestFinished(() => N.setMatmulLibrary('auto'));
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 0, max: 40 }),
        fc.boolean(),
        fc.boolean(),
        fc.constantFrom(0, 0.5),
        fc.integer({ min: 0, max: 3 }),
        seed,
        (M, Nn, K, ta, tb, beta, pad, s) => {
          const r = rng(s);
          const lda = (ta ? M : K) + pad;
          const ldb = (tb ? K : Nn) + pad;
          const ldc = Nn + pad;
          const A = randF32(Math.max(1, (ta ? K : M) * lda), r);
          const B = randF32(Math.max(1, (tb ? Nn : K) * ldb), r);
          const C0 = randF32(Math.max(1, M * ldc), r);
          const c1 = C0.slice();
          const c2 = C0.slice();
          N.sgemm(ta, tb, M, Nn, K, 1.5, A, Math.max(1, lda), B, Math.max(1, ldb), beta, c1, Math.max(1, ldc));
          R.sgemm(ta, tb, M, Nn, K, 1.5, A, Math.max(1, lda), B, Math.max(1, ldb), beta, c2, Math.max(1, ldc));
          // Judge the error against the magnitude of the summed terms, max Σ|α·a·b| + |β·c| (the classic dot-product
          // error bound), so a C entry that cancels to ≈0 is not held to a relative bound it cannot meet.
          let terms = 1e-30;
          for (let i = 0; i < M; i++)
            for (let j = 0; j < Nn; j++) {
              let t = Math.abs(beta * C0[i * ldc + j]!);
              for (let p = 0; p < K; p++)
                t +=
                  1.5 * Math.abs((ta ? A[p * lda + i]! : A[i * lda + p]!) * (tb ? B[j * ldb + p]! : B[p * ldb + j]!));
              terms = Math.max(terms, t);
            }
          expectClose(c1, c2, 1e-5, 'C', terms);
        },
      ),
      RUNS,
    );
  });

  it('rmsnorm with its residual add fused (forward: x + residual first; backward: + extra) = add and norm apart, bit for bit', () => {
    fc.assert(
      fc.property(rows, width, seed, (n, d, s) => {
        const r = rng(s);
        const x = randF32(n * d, r, 3);
        const res = randF32(n * d, r, 3);
        const w = randF32(d, r);
        const dy = randF32(n * d, r);
        const extra = randF32(n * d, r);
        for (const k of [N, R]) {
          // apart
          const h1 = new Float32Array(n * d);
          k.add(res, x, h1, n * d);
          const y1 = new Float32Array(n * d);
          const rs1 = new Float32Array(n);
          k.rmsnormFwd(h1, w, y1, rs1, n, d, 1e-5);
          const dx1 = new Float32Array(n * d);
          const dw1 = new Float32Array(d);
          k.rmsnormBwd(dy, h1, w, rs1, dx1, dw1, n, d);
          k.add(dx1, extra, dx1, n * d);
          // fused
          const h2 = x.slice();
          const y2 = new Float32Array(n * d);
          const rs2 = new Float32Array(n);
          k.rmsnormFwd(h2, w, y2, rs2, n, d, 1e-5, res);
          const dx2 = new Float32Array(n * d);
          const dw2 = new Float32Array(d);
          k.rmsnormBwd(dy, h2, w, rs2, dx2, dw2, n, d, extra);
          expectExact(h2, h1, 'h = x + residual');
          expectExact(y2, y1, 'y');
          expectExact(rs2, rs1, 'rstd');
          expectExact(dx2, dx1, 'dx + extra');
          expectExact(dw2, dw1, 'dw');
        }
      }),
      RUNS,
    );
    expect(() =>
      N.rmsnormFwd(
        new Float32Array(8),
        new Float32Array(4),
        new Float32Array(8),
        new Float32Array(2),
        2,
        4,
        1e-5,
        new Float32Array(7),
      ),
    ).toThrow(/residual/);
  });

  it('rmsnorm into bf16: each output value rounded once (= the f32 output through toBf16), with and without a residual', () => {
    fc.assert(
      fc.property(rows, width, seed, fc.boolean(), (n, d, s, withRes) => {
        const r = rng(s);
        const x = randF32(n * d, r, 3);
        const res = withRes ? randF32(n * d, r, 3) : null;
        const w = randF32(d, r);
        for (const k of [N, R]) {
          const xf = x.slice();
          const yf = new Float32Array(n * d);
          const rf = new Float32Array(n);
          k.rmsnormFwd(xf, w, yf, rf, n, d, 1e-5, res);
          const want = new Uint16Array(n * d);
          R.toBf16(yf, want, n * d);
          const xh = x.slice();
          const yh = new Uint16Array(n * d).fill(0x7fc0);
          const rh = new Float32Array(n);
          k.rmsnormFwd(xh, w, yh, rh, n, d, 1e-5, res);
          expect(Array.from(yh)).toEqual(Array.from(want));
          expectExact(rh, rf, 'rstd');
          expectExact(xh, xf, 'x (+ residual)');
        }
      }),
      RUNS,
    );
  });

  it('rmsnorm forward and backward', () => {
    fc.assert(
      fc.property(rows, width, seed, (n, d, s) => {
        const r = rng(s);
        const x = randF32(n * d, r, 3);
        const w = randF32(d, r);
        const dy = randF32(n * d, r);
        const out = [0, 1].map(() => ({
          y: new Float32Array(n * d),
          rstd: new Float32Array(n),
          dx: new Float32Array(n * d),
          dw: randF32(d, rng(s + 1)),
        }));
        [N, R].forEach((k, i) => {
          const o = out[i]!;
          k.rmsnormFwd(x, w, o.y, o.rstd, n, d, 1e-5);
          k.rmsnormBwd(dy, x, w, o.rstd, o.dx, o.dw, n, d);
        });
        expectClose(out[0]!.y, out[1]!.y, 1e-5, 'y');
        expectClose(out[0]!.rstd, out[1]!.rstd, 1e-5, 'rstd');
        // dx = rstd·(g − x̂·mean(g·x̂)) cancels almost completely at tiny D (D = 1: x̂² ≈ 1); judge its error against
        // the size of the terms, rstd·|dy·w|, not against the cancelled result.
        let terms = 0;
        for (let i = 0; i < n * d; i++)
          terms = Math.max(terms, Math.abs(out[1]!.rstd[Math.floor(i / d)]! * dy[i]! * w[i % d]!));
        expectClose(out[0]!.dx, out[1]!.dx, 1e-5, 'dx', Math.max(terms, 1e-30));
        let dwTerms = 1e-30; // dw0 + Σ_rows dy·x̂ can cancel: judge against |dw0| + Σ|dy·x̂| per column
        const dw0 = randF32(d, rng(s + 1));
        for (let c = 0; c < d; c++) {
          let t = Math.abs(dw0[c]!);
          for (let i = 0; i < n; i++) t += Math.abs(dy[i * d + c]! * x[i * d + c]! * out[1]!.rstd[i]!);
          dwTerms = Math.max(dwTerms, t);
        }
        expectClose(out[0]!.dw, out[1]!.dw, 1e-5, 'dw (accumulated)', dwTerms);
      }),
      RUNS,
    );
  });

  it('swiglu forward and backward, including large |a|', () => {
    fc.assert(
      fc.property(fc.constantFrom(0, 1, 15, 16, 17, 100, 1000), fc.constantFrom(1, 10, 100), seed, (n, amp, s) => {
        const r = rng(s);
        const a = randF32(n, r, amp);
        const b = randF32(n, r);
        const dh = randF32(n, r);
        const res = [N, R].map((k) => {
          const h = new Float32Array(n);
          const da = new Float32Array(n);
          const db = new Float32Array(n);
          k.swigluFwd(a, b, h, n);
          k.swigluBwd(dh, a, b, da, db, n);
          return { h, da, db };
        });
        expectClose(res[0]!.h, res[1]!.h, 1e-5, 'h');
        expectClose(res[0]!.da, res[1]!.da, 1e-5, 'da');
        expectClose(res[0]!.db, res[1]!.db, 1e-5, 'db');
      }),
      RUNS,
    );
  });

  // batch, S, heads, dim, extra (a head's unrotated part before its pairs), inverse
  const ropeArgs = [
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 1, max: 9 }),
    fc.integer({ min: 1, max: 4 }),
    fc.constantFrom(2, 8, 16, 64),
    fc.integer({ min: 0, max: 5 }),
    fc.boolean(),
  ] as const;

  it('rope on strided head slices (GQA q/k and MLA q_pe), forward and inverse, bit-exact', () => {
    fc.assert(
      fc.property(...ropeArgs, seed, (Bb, S, heads, dim, extra, inverse, s) => {
        const r = rng(s);
        // Each head is [nope (extra) | pe (dim)], as in MLA's q = concat(q_nope, q_pe).
        const headStride = extra + dim;
        const rowStride = heads * headStride + 3;
        const rowsN = Bb * S;
        const x = randF32(rowsN * rowStride, r, 2);
        const cos = randF32(S * (dim / 2), r);
        const sin = randF32(S * (dim / 2), r);
        const x1 = x.slice();
        const x2 = x.slice();
        N.rope(x1, cos, sin, rowsN, S, heads, rowStride, headStride, extra, dim, inverse);
        R.rope(x2, cos, sin, rowsN, S, heads, rowStride, headStride, extra, dim, inverse);
        expectExact(x1, x2, 'x');
      }),
      RUNS,
    );
  });

  it('ropeBf16: the rotation rounded into bf16 rows at their own stride = rope then toBf16, untouched elsewhere', () => {
    fc.assert(
      fc.property(...ropeArgs, seed, (Bb, S, heads, dim, extra, inverse, s) => {
        const r = rng(s);
        const headStride = extra + dim;
        const rowStride = heads * headStride + 3;
        const outStride = heads * headStride + 5;
        const rowsN = Bb * S;
        const x = randF32(rowsN * rowStride, r, 2);
        const cos = randF32(S * (dim / 2), r);
        const sin = randF32(S * (dim / 2), r);
        const outs = [N, R].map((kern) => {
          const out = new Uint16Array(rowsN * outStride).fill(0xabcd);
          const src = x.slice();
          kern.ropeBf16(src, cos, sin, rowsN, S, heads, rowStride, headStride, extra, dim, inverse, out, outStride);
          expectExact(src, x, 'x is read only');
          return out;
        });
        // The same as rotating in place and rounding every rotated element (toBf16).
        const rot = x.slice();
        R.rope(rot, cos, sin, rowsN, S, heads, rowStride, headStride, extra, dim, inverse);
        const want = new Uint16Array(rowsN * outStride).fill(0xabcd);
        for (let row = 0; row < rowsN; row++)
          for (let h = 0; h < heads; h++) {
            const at = h * headStride + extra;
            R.toBf16(rot.subarray(row * rowStride + at), want.subarray(row * outStride + at), dim);
          }
        expect(Array.from(outs[0]!)).toEqual(Array.from(want));
        expect(Array.from(outs[1]!)).toEqual(Array.from(want));
      }),
      RUNS,
    );
    expect(() =>
      N.ropeBf16(
        new Float32Array(8),
        new Float32Array(2),
        new Float32Array(2),
        2,
        1,
        1,
        4,
        4,
        0,
        4,
        false,
        new Uint16Array(6),
        4,
      ),
    ).toThrow(/out/);
  });

  it('toBf16Rows: strided f32 rows into strided bf16 rows, as toBf16 row by row', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 0, max: 70 }),
        fc.integer({ min: 0, max: 5 }),
        fc.integer({ min: 0, max: 5 }),
        seed,
        (rows, cols, ps, pd, s) => {
          const r = rng(s);
          const lds = cols + ps;
          const ldd = cols + pd;
          const src = randF32(Math.max(0, rows * lds), r, 3);
          if (src.length > 2) src[1] = Number.NaN;
          const outs = [N, R].map((kern) => {
            const dst = new Uint16Array(Math.max(0, rows * ldd)).fill(0x1234);
            kern.toBf16Rows(src, lds, rows, cols, dst, ldd);
            return dst;
          });
          const want = new Uint16Array(Math.max(0, rows * ldd)).fill(0x1234);
          for (let i = 0; i < rows; i++) R.toBf16(src.subarray(i * lds, i * lds + cols), want.subarray(i * ldd), cols);
          expect(Array.from(outs[0]!)).toEqual(Array.from(want));
          expect(Array.from(outs[1]!)).toEqual(Array.from(want));
        },
      ),
      RUNS,
    );
    expect(() => N.toBf16Rows(new Float32Array(8), 2, 2, 4, new Uint16Array(8), 4)).toThrow(/at least cols/);
    expect(() => N.toBf16Rows(new Float32Array(8), 4, 3, 4, new Uint16Array(12), 4)).toThrow(/src/);
  });

  const attnShape = fc.record({
    B: fc.integer({ min: 1, max: 2 }),
    S: fc.constantFrom(1, 2, 17, 63, 64, 65, 130),
    Hkv: fc.integer({ min: 1, max: 2 }),
    group: fc.constantFrom(1, 2, 4),
    dk: fc.constantFrom(1, 8, 16, 17, 24, 33),
    dv: fc.constantFrom(1, 8, 16, 17, 33),
  });

  it('causal attention forward and backward (GQA, dk ≠ dv, S across block boundaries)', () => {
    fc.assert(
      fc.property(attnShape, seed, ({ B, S, Hkv, group, dk, dv }, s) => {
        const Hq = Hkv * group;
        attnCase(B, S, Hq, Hkv, dk, dv, s);
      }),
      RUNS,
    );
  });

  it('attention at MLA shapes (dk 192 = 128 nope + 64 rope, dv 128) and the debugmodel head dim', () => {
    attnCase(1, 70, 2, 2, 192, 128, 7);
    attnCase(2, 129, 4, 2, 16, 16, 8);
  });

  function attnCase(B: number, S: number, Hq: number, Hkv: number, dk: number, dv: number, s: number): void {
    const r = rng(s);
    const scale = 1 / Math.sqrt(dk);
    const q = randF32(B * S * Hq * dk, r, 2);
    const k = randF32(B * S * Hkv * dk, r, 2);
    const v = randF32(B * S * Hkv * dv, r);
    const dout = randF32(B * S * Hq * dv, r);
    const res = [N, R].map((kern) => {
      const o = new Float32Array(B * S * Hq * dv).fill(NaN);
      const lse = new Float32Array(B * Hq * S).fill(NaN);
      kern.attentionFwd(q, k, v, o, lse, B, S, Hq, Hkv, dk, dv, scale);
      const dq = new Float32Array(q.length).fill(NaN);
      const dk_ = new Float32Array(k.length).fill(NaN);
      const dv_ = new Float32Array(v.length).fill(NaN);
      kern.attentionBwd(dout, q, k, v, o, lse, dq, dk_, dv_, B, S, Hq, Hkv, dk, dv, scale);
      return { o, lse, dq, dk: dk_, dv: dv_ };
    });
    const [n, f] = res as [(typeof res)[0], (typeof res)[0]];
    const tag = `B${B} S${S} Hq${Hq} Hkv${Hkv} dk${dk} dv${dv}`;
    expectClose(n.o, f.o, 1e-4, `o ${tag}`);
    expectClose(n.lse, f.lse, 1e-5, `lse ${tag}`);
    // dQ and dK are sums of scale·p·(dP − Δ)·k terms that cancel (exactly, when a query sees one key: S = 1 gives
    // dP = Δ), leaving rounding noise of the size of dP = dO·v: |dO|, |v| ≤ 1 and |q|, |k| ≤ 2 bound each term by
    // scale·dv·2, which is the scale the error is judged against.
    const terms = scale * dv * 2;
    expectClose(n.dq, f.dq, 1e-4, `dq ${tag}`, terms);
    expectClose(n.dk, f.dk, 1e-4, `dk ${tag}`, terms);
    expectClose(n.dv, f.dv, 1e-4, `dv ${tag}`);
  }

  const attnShape16 = fc.record({
    B: fc.integer({ min: 1, max: 2 }),
    S: fc.constantFrom(1, 2, 17, 63, 64, 65, 130),
    Hkv: fc.integer({ min: 1, max: 2 }),
    group: fc.constantFrom(1, 2, 4),
    dk: fc.constantFrom(2, 8, 16, 18, 34),
    dv: fc.constantFrom(2, 8, 16, 34),
  });

  it('bf16 attention forward and backward (pairs of bf16 per product, GQA, dk ≠ dv, S across blocks)', () => {
    fc.assert(
      fc.property(attnShape16, seed, ({ B, S, Hkv, group, dk, dv }, s) => {
        attnCase16(B, S, Hkv * group, Hkv, dk, dv, s);
      }),
      { numRuns: Math.min(RUNS.numRuns, 25) },
    );
    attnCase16(1, 70, 2, 2, 192, 128, 7);
    attnCase16(2, 129, 4, 2, 16, 16, 8);
  });

  it('bf16 attention names odd head dims and misaligned bf16 views as the cause', () => {
    const q = new Uint16Array(2 * 3);
    const lse = new Float32Array(2);
    for (const kern of [N, R])
      expect(() => kern.attentionFwdBf16(q, q, q, q, lse, 1, 2, 1, 1, 3, 3, 1)).toThrow(/must be even/);
    const buf = new Uint16Array(2 * 2 + 1);
    const odd = buf.subarray(1);
    expect(() => N.attentionFwdBf16(odd, odd, odd, odd, lse, 1, 2, 1, 1, 2, 2, 1)).toThrow(/4-byte boundary/);
  });

  function toBf16(x: Float32Array): Uint16Array {
    const h = new Uint16Array(x.length);
    R.toBf16(x, h, x.length);
    return h;
  }

  function attnCase16(B: number, S: number, Hq: number, Hkv: number, dk: number, dv: number, s: number): void {
    const r = rng(s);
    const scale = 1 / Math.sqrt(dk);
    const q = toBf16(randF32(B * S * Hq * dk, r, 2));
    const k = toBf16(randF32(B * S * Hkv * dk, r, 2));
    const v = toBf16(randF32(B * S * Hkv * dv, r));
    const dout = toBf16(randF32(B * S * Hq * dv, r));
    const res = [N, R].map((kern) => {
      const o = new Uint16Array(B * S * Hq * dv).fill(0x7fc0);
      const lse = new Float32Array(B * Hq * S).fill(NaN);
      kern.attentionFwdBf16(q, k, v, o, lse, B, S, Hq, Hkv, dk, dv, scale);
      const dq = new Float32Array(q.length).fill(NaN);
      const dk_ = new Float32Array(k.length).fill(NaN);
      const dv_ = new Float32Array(v.length).fill(NaN);
      // Both sides differentiate the same (native) o, so backward is compared on identical inputs.
      kern.attentionBwdBf16(dout, q, k, v, res0 ?? o, lse, dq, dk_, dv_, B, S, Hq, Hkv, dk, dv, scale);
      res0 ??= o;
      const of = new Float32Array(o.length);
      R.fromBf16(o, of, o.length);
      return { o: of, lse, dq, dk: dk_, dv: dv_ };
    });
    res0 = undefined;
    const [n, f] = res as [(typeof res)[0], (typeof res)[0]];
    const tag = `bf16 B${B} S${S} Hq${Hq} Hkv${Hkv} dk${dk} dv${dv}`;
    expectClose(n.o, f.o, 1e-2, `o ${tag}`);
    expectClose(n.lse, f.lse, 1e-5, `lse ${tag}`);
    const terms = scale * dv * 2;
    expectClose(n.dq, f.dq, 1e-2, `dq ${tag}`, terms);
    expectClose(n.dk, f.dk, 1e-2, `dk ${tag}`, terms);
    expectClose(n.dv, f.dv, 1e-2, `dv ${tag}`);
  }
  let res0: Uint16Array | undefined;

  it('cross-entropy backward into bf16: the f32 gradient rounded once per value (native = its own f32 path rounded)', () => {
    fc.assert(
      fc.property(rows, fc.constantFrom(1, 5, 17, 100), seed, (n, V, s) => {
        const r = rng(s);
        const logits = randF32(n * V, r, 3);
        const labels = randInts(n, V, r);
        for (let i = 0; i < n; i++) if (r() < 0.25) labels[i] = -100;
        const scale = 1 / Math.max(1, n);
        const lse = new Float32Array(n);
        N.crossEntropyFwd(logits, labels, lse, n, V);
        for (const k of [N, R]) {
          const f = new Float32Array(n * V).fill(NaN);
          k.crossEntropyBwd(logits, labels, lse, f, n, V, scale);
          const want = new Uint16Array(n * V);
          R.toBf16(f, want, n * V);
          const got = new Uint16Array(n * V).fill(0x7fc0);
          k.crossEntropyBwd(logits, labels, lse, got, n, V, scale);
          expect(Array.from(got)).toEqual(Array.from(want));
        }
      }),
      RUNS,
    );
  });

  it('cross-entropy forward and backward, with ignored rows and dlogits aliasing logits', () => {
    fc.assert(
      fc.property(
        rows,
        fc.constantFrom(1, 2, 17, 100, 2048),
        fc.constantFrom(1, 5),
        fc.boolean(),
        seed,
        (n, V, amp, alias, s) => {
          const r = rng(s);
          const logits = randF32(n * V, r, amp);
          const labels = randInts(n, V, r);
          for (let i = 0; i < n; i++) if (r() < 0.25) labels[i] = -100;
          const scale = 1 / Math.max(1, n);
          const res = [N, R].map((k) => {
            const lse = new Float32Array(n).fill(NaN);
            const loss = k.crossEntropyFwd(logits, labels, lse, n, V);
            const src = logits.slice();
            const dl = alias ? src : new Float32Array(n * V).fill(NaN);
            k.crossEntropyBwd(src, labels, lse, dl, n, V, scale);
            return { lse, loss, dl };
          });
          const [a, b] = res as [(typeof res)[0], (typeof res)[0]];
          expect(Math.abs(a.loss - b.loss)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(b.loss)));
          // lse = max + log Σ exp(· − max): two terms of size ≤ amp and ≤ ln V that can cancel to ≈0.
          expectClose(a.lse, b.lse, 1e-6, 'lse', amp + Math.log(V));
          // softmax − onehot cancels at the label when p → 1; every entry is a difference of values in [0, 1]·scale,
          // so the error is judged against scale.
          expectClose(a.dl, b.dl, 1e-5, 'dlogits', scale);
          for (let i = 0; i < n; i++) if (labels[i] === -100) expect(a.lse[i]).toBe(0);
        },
      ),
      RUNS,
    );
  });

  it('embedding gather and scatter-add with repeated ids', () => {
    fc.assert(
      fc.property(rows, width, fc.integer({ min: 1, max: 6 }), seed, (n, d, V, s) => {
        const r = rng(s);
        const table = randF32(V * d, r);
        const ids = randInts(n, V, r); // V ≤ 6 ids over up to 65 rows: many repeats
        const dout = randF32(n * d, r);
        const res = [N, R].map((k) => {
          const out = new Float32Array(n * d).fill(NaN);
          k.embeddingFwd(table, ids, out, n, d);
          const dtable = table.slice(); // accumulate onto existing values
          k.embeddingBwd(dout, ids, dtable, n, d);
          return { out, dtable };
        });
        expectExact(res[0]!.out, res[1]!.out, 'out');
        expectExact(res[0]!.dtable, res[1]!.dtable, 'dtable'); // same row order, single float adds: identical
      }),
      RUNS,
    );
  });

  it('MoE gatherRows / scatterAddRows (with and without gate scale, R = 0, repeats) and gatherRowDot', () => {
    fc.assert(
      fc.property(rows, width, fc.integer({ min: 1, max: 9 }), fc.boolean(), seed, (Rn, d, T, useScale, s) => {
        const r = rng(s);
        const src = randF32(T * d, r);
        const idx = randInts(Rn, T, r);
        const gate = useScale ? randF32(Rn, r) : null;
        const b = randF32(Rn * d, r);
        const res = [N, R].map((k) => {
          const out = new Float32Array(Rn * d).fill(NaN);
          k.gatherRows(src, idx, out, Rn, d, gate);
          const back = src.slice();
          k.scatterAddRows(b, idx, back, Rn, d, gate);
          const dots = new Float32Array(Rn).fill(NaN);
          k.gatherRowDot(src, idx, b, dots, Rn, d);
          return { out, back, dots };
        });
        expectClose(res[0]!.out, res[1]!.out, 1e-7, 'gather');
        expectClose(res[0]!.back, res[1]!.back, 1e-6, 'scatter-add');
        let terms = 1e-30; // as for sgemm: error bound ∝ Σ|a·b| per row
        for (let i = 0; i < Rn; i++) {
          let t = 0;
          for (let c = 0; c < d; c++) t += Math.abs(src[idx[i]! * d + c]! * b[i * d + c]!);
          terms = Math.max(terms, t);
        }
        expectClose(res[0]!.dots, res[1]!.dots, 1e-5, 'row dots', terms);
      }),
      RUNS,
    );
  });

  it('AdamW bit-exact over several steps (torch operation order)', () => {
    fc.assert(
      fc.property(fc.constantFrom(1, 15, 16, 17, 1000, 40000), seed, fc.constantFrom(0, 0.1), (n, s, wd) => {
        const r = rng(s);
        const p0 = randF32(n, r);
        const st = [0, 1].map(() => ({ p: p0.slice(), m: new Float32Array(n), v: new Float32Array(n) }));
        for (let step = 1; step <= 3; step++) {
          const g = randF32(n, r, 1e-2);
          [N, R].forEach((k, i) => k.adamw(st[i]!.p, g, st[i]!.m, st[i]!.v, n, 8e-4, 0.9, 0.95, 1e-8, wd, step));
        }
        expectExact(st[0]!.p, st[1]!.p, 'p');
        expectExact(st[0]!.m, st[1]!.m, 'm');
        expectExact(st[0]!.v, st[1]!.v, 'v');
      }),
      { numRuns: Math.ceil(RUNS.numRuns / 3) },
    );
  });

  it('AdamW with gradScale = scaling the gradient first (clip coefficient folded in), bit-exact', () => {
    fc.assert(
      fc.property(fc.constantFrom(1, 17, 1000, 40000), seed, fc.constantFrom(1, 0.37, 1e-3), (n, s, c) => {
        const r = rng(s);
        const p0 = randF32(n, r);
        const st = [0, 1, 2].map(() => ({ p: p0.slice(), m: new Float32Array(n), v: new Float32Array(n) }));
        for (let step = 1; step <= 2; step++) {
          const g = randF32(n, r, 1e-2);
          [N, R].forEach((k, i) => k.adamw(st[i]!.p, g, st[i]!.m, st[i]!.v, n, 8e-4, 0.9, 0.95, 1e-8, 0.1, step, c));
          const scaled = g.slice();
          N.scale(scaled, c, n);
          N.adamw(st[2]!.p, scaled, st[2]!.m, st[2]!.v, n, 8e-4, 0.9, 0.95, 1e-8, 0.1, step);
        }
        for (const i of [0, 1]) {
          expectExact(st[i]!.p, st[2]!.p, 'p');
          expectExact(st[i]!.m, st[2]!.m, 'm');
          expectExact(st[i]!.v, st[2]!.v, 'v');
        }
      }),
      { numRuns: Math.ceil(RUNS.numRuns / 3) },
    );
  });

  it('zero: every element of the given length, NaN and inf too, nothing past it', () => {
    for (const n of [0, 1, 17, 65_536, 65_537, 300_001]) {
      for (const k of [N, R]) {
        const x = new Float32Array(n + 3).fill(7);
        if (n > 2) {
          x[0] = Number.NaN;
          x[1] = Number.POSITIVE_INFINITY;
          x[n - 1] = -0.5;
        }
        k.zero(x, n);
        expect(x.subarray(0, n).every((v) => Object.is(v, 0))).toBe(true);
        expect(Array.from(x.subarray(n))).toEqual([7, 7, 7]);
      }
    }
    expect(() => N.zero(new Float32Array(4), 5)).toThrow(/x/);
  });

  it('copy: bit for bit with and without streaming stores, at unaligned offsets, NaN payloads kept', () => {
    for (const n of [0, 1, 15, 64, 1000, 100_003]) {
      for (const shift of [0, 1, 3]) {
        const src = new Float32Array(n + 4);
        const bits = new Uint32Array(src.buffer);
        for (let i = 0; i < bits.length; i++) bits[i] = (Math.imul(i + 1, 2654435761) ^ (i << 7)) >>> 0;
        bits[2] = 0x7fc12345; // a NaN with a payload
        for (const stream of [false, true]) {
          const got = [N, R].map((k) => {
            const dst = new Float32Array(n + 8).fill(-1);
            k.copy(src.subarray(shift, shift + n), dst.subarray(2 + shift, 2 + shift + n), n, stream);
            return new Uint32Array(dst.buffer);
          });
          expect(
            Buffer.from(got[0]!.buffer).equals(Buffer.from(got[1]!.buffer)),
            `n=${n} shift=${shift} stream=${stream}`,
          ).toBe(true);
          expect(got[0]![1]).toBe(new Uint32Array(new Float32Array([-1]).buffer)[0]); // untouched before the view
        }
      }
    }
  });

  it('add (aliased), axpy, scale, sumSquares', () => {
    fc.assert(
      fc.property(fc.constantFrom(0, 1, 17, 1000, 100000), seed, (n, s) => {
        const r = rng(s);
        const a = randF32(n, r);
        const b = randF32(n, r);
        const res = [N, R].map((k) => {
          const out = new Float32Array(n);
          k.add(a, b, out, n);
          const inPlace = a.slice();
          k.add(inPlace, b, inPlace, n);
          const y = b.slice();
          k.axpy(-0.3, a, y, n);
          const x = a.slice();
          k.scale(x, 1 / 3, n);
          return { out, inPlace, y, x, ss: k.sumSquares(a, n) };
        });
        const [p, q] = res as [(typeof res)[0], (typeof res)[0]];
        expectExact(p.out, q.out, 'add');
        expectExact(p.inPlace, q.out, 'add in place');
        let terms = 1e-30; // y + α·x can cancel: judge against |y| + |α·x|
        for (let i = 0; i < n; i++) terms = Math.max(terms, Math.abs(b[i]!) + 0.3 * Math.abs(a[i]!));
        expectClose(p.y, q.y, 1e-6, 'axpy', terms);
        expectClose(p.x, q.x, 1e-6, 'scale');
        expect(Math.abs(p.ss - q.ss)).toBeLessThanOrEqual(1e-12 * Math.max(1, q.ss));
      }),
      RUNS,
    );
  });
});
