// bfloat16 kernels: the conversions against the IEEE rule (round to nearest, ties to even; NaN stays NaN; exact
// widening) and the bf16-input matmul against the reference (bf16 inputs widened exactly, products summed in f64).
import { describe, expect, it, onTestFinished } from 'vitest';
import fc from 'fast-check';
import { nativeKernels, refKernels } from '../../src/tensor/kernels.ts';
import { expectClose, randF32, rng } from './helpers.ts';

const N = nativeKernels();
const R = refKernels;
const RUNS = { numRuns: Number(process.env.KERNELS_TEST_RUNS ?? 30) };

function f32FromBits(u: number): number {
  return new Float32Array(Uint32Array.of(u).buffer)[0]!;
}

describe('bf16 conversions', () => {
  it('round to nearest even, keep NaN, inf and signed zero, widen exactly', () => {
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa → 1. 1 + 3·2^-8 ties up to 1 + 2^-6 (even).
    const xs = Float32Array.of(
      1,
      1 + 2 ** -8,
      1 + 3 * 2 ** -8,
      1 + 2 ** -8 + 2 ** -20,
      -0,
      Infinity,
      -Infinity,
      NaN,
      3.4e38,
      1e-40,
    );
    const want = [0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x8000, 0x7f80, 0xff80, -1, 0x7f80, 0x0001];
    for (const k of [N, R]) {
      const out = new Uint16Array(xs.length);
      k.toBf16(xs, out, xs.length);
      want.forEach((w, i) => {
        if (w === -1)
          expect((out[i]! & 0x7f80) === 0x7f80 && (out[i]! & 0x7f) !== 0, `${k.impl}: NaN stays NaN`).toBe(true);
        else expect(out[i], `${k.impl}: toBf16(${xs[i]})`).toBe(w);
      });
      const back = new Float32Array(xs.length);
      k.fromBf16(out, back, xs.length);
      expect(back[0]).toBe(1);
      expect(Object.is(back[4], -0)).toBe(true);
      expect(back[6]).toBe(-Infinity);
    }
  });

  it('native and reference agree bit for bit on random values of every magnitude', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (s) => {
        const r = rng(s);
        const bits = new Uint32Array(257);
        for (let i = 0; i < bits.length; i++) bits[i] = Math.floor(r() * 2 ** 32);
        const x = new Float32Array(bits.buffer);
        const a = new Uint16Array(x.length);
        const b = new Uint16Array(x.length);
        N.toBf16(x, a, x.length);
        R.toBf16(x, b, x.length);
        for (let i = 0; i < x.length; i++) {
          if (Number.isNaN(x[i])) expect(Number.isNaN(f32FromBits(a[i]! << 16))).toBe(true);
          else expect(a[i]).toBe(b[i]);
        }
      }),
      RUNS,
    );
  });
});

describe('gemmBf16', () => {
  it('matches the widened reference (all transposes, strided, beta ≠ 0)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 0, max: 40 }),
        fc.integer({ min: 0, max: 40 }),
        fc.boolean(),
        fc.boolean(),
        fc.constantFrom(0, 1),
        fc.integer({ min: 0, max: 2 }),
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        (M, Nn, K, ta, tb, beta, pad, s) => {
          const r = rng(s);
          const lda = Math.max(1, (ta ? M : K) + pad);
          const ldb = Math.max(1, (tb ? K : Nn) + pad);
          const ldc = Math.max(1, Nn + pad);
          const A32 = randF32(Math.max(1, (ta ? K : M) * lda), r);
          const B32 = randF32(Math.max(1, (tb ? Nn : K) * ldb), r);
          const A = new Uint16Array(A32.length);
          const B = new Uint16Array(B32.length);
          R.toBf16(A32, A, A.length);
          R.toBf16(B32, B, B.length);
          const C0 = randF32(Math.max(1, M * ldc), r);
          const c1 = C0.slice();
          const c2 = C0.slice();
          N.gemmBf16(ta, tb, M, Nn, K, 1, A, lda, B, ldb, beta, c1, ldc);
          R.gemmBf16(ta, tb, M, Nn, K, 1, A, lda, B, ldb, beta, c2, ldc);
          // f32 accumulation of exact bf16 products: the dot-product bound over K terms of magnitude ≤ 1, plus β·C.
          expectClose(c1, c2, 1e-5, 'C', K + 1);
        },
      ),
      RUNS,
    );
  });

  // The path of CPUs without bf16 dot products (and of builds without oneDNN): the bf16 values widened to f32 and
  // multiplied there. MOE_ACTORS_MATMUL=blas takes it on any machine.
  it.each(['blas', 'auto'] as const)('sgemmBf16 (%s) = the f32 product of the bf16-rounded operands', (lib) => {
    N.setMatmulLibrary(lib);
    onTestFinished(() => N.setMatmulLibrary('auto'));
    const r = rng(5);
    const [M, Nn, K] = [19, 23, 37];
    const A = randF32(M * K, r);
    const B = randF32(Nn * K, r);
    const a = new Uint16Array(A.length);
    const b = new Uint16Array(B.length);
    R.toBf16(A, a, a.length);
    R.toBf16(B, b, b.length);
    const c1 = new Float32Array(M * Nn);
    const c2 = new Float32Array(M * Nn);
    N.sgemmBf16(false, true, M, Nn, K, 1, A, K, B, K, 0, c1, Nn);
    R.gemmBf16(false, true, M, Nn, K, 1, a, K, b, K, 0, c2, Nn);
    expectClose(c1, c2, 1e-5, 'C', K);
    const f32 = new Float32Array(M * Nn);
    R.sgemm(false, true, M, Nn, K, 1, A, K, B, K, 0, f32, Nn);
    expect(
      c1.some((v, i) => v !== f32[i]),
      'the operands were rounded',
    ).toBe(true);
  });

  // Layers round an operand shared by several products once and pass its bits: the products must be the ones of
  // its f32 source, bit for bit, with either operand (or both) pre-rounded, strided and transposed, on both paths.
  it.each(['blas', 'auto'] as const)('sgemmBf16 (%s) with pre-rounded operands = with their f32 sources', (lib) => {
    N.setMatmulLibrary(lib);
    onTestFinished(() => N.setMatmulLibrary('auto'));
    const r = rng(6);
    const [M, Nn, K] = [21, 18, 33];
    for (const [ta, tb] of [
      [false, true],
      [true, false],
      [false, false],
    ] as const) {
      const lda = (ta ? M : K) + 3;
      const ldb = (tb ? K : Nn) + 2;
      const A = randF32((ta ? K : M) * lda, r);
      const B = randF32((tb ? Nn : K) * ldb, r);
      const a = new Uint16Array(A.length);
      const b = new Uint16Array(B.length);
      N.toBf16(A, a, a.length);
      N.toBf16(B, b, b.length);
      const C0 = randF32(M * Nn, r);
      const want = C0.slice();
      N.sgemmBf16(ta, tb, M, Nn, K, 1, A, lda, B, ldb, 1, want, Nn);
      for (const [x, y] of [
        [a, B],
        [A, b],
        [a, b],
      ] as const) {
        const got = C0.slice();
        N.sgemmBf16(ta, tb, M, Nn, K, 1, x, lda, y, ldb, 1, got, Nn);
        expect(Array.from(got)).toEqual(Array.from(want));
        const ref = C0.slice();
        R.sgemmBf16(ta, tb, M, Nn, K, 1, x, lda, y, ldb, 1, ref, Nn);
        expectClose(got, ref, 1e-5, 'C', K);
      }
    }
  });

  // Row counts off a multiple of 64 (MoE expert rows) share one oneDNN primitive whose rows are set per call
  // (M of the forward products, K of the weight-gradient product): each call must compute its own rows.
  it('sgemmBf16 with changing row counts on one shape family = the reference', () => {
    const r = rng(7);
    const [Nn, D] = [24, 40];
    for (const rows of [21, 130, 5, 64, 77, 21]) {
      const X = randF32(rows * D, r);
      const W = randF32(Nn * D, r);
      const Y = randF32(rows * Nn, r);
      const got = new Float32Array(rows * Nn);
      const want = new Float32Array(rows * Nn);
      N.sgemmBf16(false, true, rows, Nn, D, 1, X, D, W, D, 0, got, Nn);
      R.sgemmBf16(false, true, rows, Nn, D, 1, X, D, W, D, 0, want, Nn);
      expectClose(got, want, 1e-5, `forward rows=${rows}`, D);
      const gw = randF32(Nn * D, r);
      const ww = gw.slice();
      N.sgemmBf16(true, false, Nn, D, rows, 1, Y, Nn, X, D, 1, gw, D);
      R.sgemmBf16(true, false, Nn, D, rows, 1, Y, Nn, X, D, 1, ww, D);
      expectClose(gw, ww, 1e-5, `weight gradient rows=${rows}`, rows);
    }
  });

  // A bf16 C (a bf16 linear's output): the f32 product rounded once into C's rows (ldc > N leaves the gaps alone).
  // Against the reference's f32 product rounded: equal but where the two libraries' f32 sums differ in the last
  // bits across a rounding boundary (one bf16 ulp, 2⁻⁸ relative).
  it('sgemmBf16 into a bf16 C rounds the product once; alpha ≠ 1 or beta ≠ 0 is refused', () => {
    const r = rng(11);
    for (const [M, Nn, K, ta, tb] of [
      [64, 48, 40, false, true],
      [21, 24, 130, false, false],
      [70, 33, 17, true, false],
    ] as const) {
      const ldc = Nn + 3;
      const A = randF32(M * K, r);
      const B = randF32(K * Nn, r);
      const [lda, ldb] = [ta ? M : K, tb ? K : Nn];
      const want = new Float32Array(M * Nn);
      R.sgemmBf16(ta, tb, M, Nn, K, 1, A, lda, B, ldb, 0, want, Nn);
      const want16 = new Uint16Array(M * Nn);
      R.toBf16(want, want16, M * Nn);
      for (const k of [N, R]) {
        const C = new Uint16Array(M * ldc).fill(0x7777);
        k.sgemmBf16(ta, tb, M, Nn, K, 1, A, lda, B, ldb, 0, C, ldc);
        let same = 0;
        const got = new Float32Array(M * Nn);
        const w = new Float32Array(M * Nn);
        for (let i = 0; i < M; i++) {
          for (let j = 0; j < Nn; j++) {
            if (C[i * ldc + j] === want16[i * Nn + j]) same++;
            got[i * Nn + j] = f32FromBits(C[i * ldc + j]! << 16);
            w[i * Nn + j] = f32FromBits(want16[i * Nn + j]! << 16);
          }
          for (let j = Nn; j < ldc; j++) expect(C[i * ldc + j], `${k.impl}: gap left alone`).toBe(0x7777);
        }
        expectClose(got, w, 2 ** -8, `${k.impl} bf16 C ${M}×${Nn}×${K}`);
        expect(same / (M * Nn), `${k.impl}: share of bit-equal elements`).toBeGreaterThan(0.97);
      }
    }
    for (const k of [N, R]) {
      const C = new Uint16Array(4);
      const A = new Float32Array(4);
      expect(() => k.sgemmBf16(false, false, 2, 2, 2, 1, A, 2, A, 2, 1, C, 2)).toThrow(/alpha = 1 and beta = 0/);
      expect(() => k.sgemmBf16(false, false, 2, 2, 2, 2, A, 2, A, 2, 0, C, 2)).toThrow(/alpha = 1 and beta = 0/);
    }
  });

  // The routed experts' products in one call: each group's result must be exactly what sgemmBf16 gives for it
  // (the native groups run side by side, each product on one thread), for every kind the experts use.
  it('sgemmBf16Groups = one sgemmBf16 per group, bit for bit; empty groups and bad offsets', () => {
    const r = rng(23);
    const [L, D, H] = [5, 40, 24];
    const counts = [37, 0, 130, 5, 64];
    const off = counts.map((_, l) => counts.slice(0, l).reduce((a, b) => a + b, 0));
    const Rn = off[L - 1]! + counts[L - 1]!;
    const x16 = new Uint16Array(Rn * D);
    N.toBf16(randF32(Rn * D, r), x16, Rn * D);
    const W = randF32(L * H * D, r);
    const dY = randF32(Rn * H, r);
    const groups = (of: (n: number, o: number, l: number) => number[]) => {
      const dims: number[] = [];
      const offs: number[] = [];
      counts.forEach((n, l) => {
        const v = of(n, off[l]!, l);
        dims.push(...v.slice(0, 3));
        offs.push(...v.slice(3));
      });
      return { dims: Int32Array.from(dims), offs: Int32Array.from(offs) };
    };
    for (const k of [N, R]) {
      // Forward NT into a bf16 C; input gradient NN with f32 A; weight gradient TN accumulating (beta 1).
      const fw = groups((n, o, l) => [n, H, D, o * D, l * H * D, o * H]);
      const got16 = new Uint16Array(Rn * H);
      k.sgemmBf16Groups(false, true, fw.dims, fw.offs, 1, x16, D, W, D, 0, got16, H);
      const bi = groups((n, o, l) => [n, D, H, o * H, l * H * D, o * D]);
      const gotX = new Float32Array(Rn * D).fill(0.5);
      k.sgemmBf16Groups(false, false, bi.dims, bi.offs, 1, dY, H, W, D, 1, gotX, D);
      const bw = groups((n, o, l) => [H, D, n, o * H, o * D, l * H * D]);
      const g0 = randF32(L * H * D, r);
      const gotW = g0.slice();
      k.sgemmBf16Groups(true, false, bw.dims, bw.offs, 1, dY, H, x16, D, 1, gotW, D);
      const want16 = new Uint16Array(Rn * H);
      const wantX = new Float32Array(Rn * D).fill(0.5);
      const wantW = g0.slice();
      counts.forEach((n, l) => {
        if (n === 0) return;
        const o = off[l]!;
        const w = W.subarray(l * H * D);
        k.sgemmBf16(false, true, n, H, D, 1, x16.subarray(o * D), D, w, D, 0, want16.subarray(o * H), H);
        k.sgemmBf16(false, false, n, D, H, 1, dY.subarray(o * H), H, w, D, 1, wantX.subarray(o * D), D);
        k.sgemmBf16(
          true,
          false,
          H,
          D,
          n,
          1,
          dY.subarray(o * H),
          H,
          x16.subarray(o * D),
          D,
          1,
          wantW.subarray(l * H * D),
          D,
        );
      });
      expect(Array.from(got16), `${k.impl}: forward`).toEqual(Array.from(want16));
      expect(Array.from(gotX), `${k.impl}: input gradient`).toEqual(Array.from(wantX));
      expect(Array.from(gotW), `${k.impl}: weight gradient`).toEqual(Array.from(wantW));
      // The empty expert's weight gradient is untouched.
      expect(Array.from(gotW.subarray(H * D, 2 * H * D))).toEqual(Array.from(g0.subarray(H * D, 2 * H * D)));
      expect(() =>
        k.sgemmBf16Groups(false, true, Int32Array.of(2, 2, 2), Int32Array.of(0, 0), 1, x16, D, W, D, 0, got16, H),
      ).toThrow(/equal lengths, a multiple of 3/);
    }
    // Native: a group reaching past its array is refused before any product runs.
    const C = new Float32Array(Rn * H).fill(3);
    expect(() =>
      N.sgemmBf16Groups(false, true, Int32Array.of(4, H, D), Int32Array.of(Rn * D, 0, 0), 1, x16, D, W, D, 0, C, H),
    ).toThrow(/group 0: A has/);
    expect(C.every((v) => v === 3)).toBe(true);
  });

  it('SwiGLU on bf16 storage = the f32 kernel on the widened inputs, rounded', () => {
    const r = rng(5);
    for (const n of [1, 15, 16, 1000, 4099]) {
      const a16 = new Uint16Array(n);
      const b16 = new Uint16Array(n);
      R.toBf16(randF32(n, r, 4), a16, n);
      R.toBf16(randF32(n, r, 4), b16, n);
      const dh = randF32(n, r);
      const out = [N, R].map((k) => {
        const h = new Uint16Array(n);
        const da = new Uint16Array(n);
        const db = new Uint16Array(n);
        k.swigluFwdBf16(a16, b16, h, n);
        k.swigluBwdBf16(dh, a16, b16, da, db, n);
        const wide = (x: Uint16Array) => Float32Array.from(x, (u) => f32FromBits(u << 16));
        return { h: wide(h), da: wide(da), db: wide(db) };
      });
      const [nat, ref] = out as [(typeof out)[0], (typeof out)[0]];
      // One bf16 ulp where the two exps (≈1 ulp of f32 apart) straddle a rounding boundary.
      for (const key of ['h', 'da', 'db'] as const)
        expectClose(nat[key], ref[key], 2 ** -8, `swiglu bf16 ${key} n=${n}`);
    }
  });

  it('rejects a Float32Array where bf16 bits are expected', () => {
    expect(() =>
      N.gemmBf16(
        false,
        false,
        2,
        2,
        2,
        1,
        new Float32Array(4) as unknown as Uint16Array,
        2,
        new Uint16Array(4),
        2,
        0,
        new Float32Array(4),
        2,
      ),
    ).toThrow(/gemmBf16: A must be a Uint16Array/);
  });
});
