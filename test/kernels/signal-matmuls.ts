// Child program of signals.test.ts: runs the matmuls whose oneDNN kernels once corrupted the heap when a signal
// arrived mid-product (strided f32 operands, which oneDNN 2.6 gives to its gemm:jit kernels; bf16 products with
// row counts off a multiple of 64, its runtime-rows gemm; bf16 products writing a bf16 C, with runtime and exact
// rows) for `seconds`, while the parent's V8 profiler samples
// this thread every 100 µs, then checks one result of each against the reference kernels and prints "ok".
import { nativeKernels, refKernels } from '../../src/tensor/kernels.ts';

const seconds = Number(process.argv[2] ?? 2);
const k = nativeKernels();
const ref = refKernels;
k.setNumThreads(1);
type Case = { ta: boolean; tb: boolean; M: number; N: number; K: number; beta: number; bf16: boolean; out16?: true };
// MLA-like slices: the operand's row stride is wider than its K (the rope / nope halves of a head).
const cases: Case[] = [
  { ta: false, tb: true, M: 512, N: 32, K: 64, beta: 0, bf16: false },
  { ta: false, tb: false, M: 512, N: 16, K: 16, beta: 0, bf16: false },
  { ta: false, tb: false, M: 512, N: 64, K: 32, beta: 1, bf16: false },
  { ta: true, tb: false, M: 32, N: 64, K: 512, beta: 1, bf16: false },
  { ta: false, tb: true, M: 300, N: 256, K: 128, beta: 0, bf16: true },
  { ta: true, tb: false, M: 128, N: 256, K: 300, beta: 1, bf16: true },
  { ta: false, tb: true, M: 300, N: 256, K: 128, beta: 0, bf16: true, out16: true },
  { ta: false, tb: true, M: 512, N: 128, K: 256, beta: 0, bf16: true, out16: true },
];
let seed = 7;
const rand = (n: number) =>
  Float32Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5);
const runs = cases.map((c) => {
  const lda = (c.ta ? c.M : c.K) + 24;
  const ldb = c.tb ? c.K : c.N;
  const A = rand((c.ta ? c.K : c.M) * lda);
  const B = rand((c.tb ? c.N : c.K) * ldb);
  const Ab = new Uint16Array(A.length);
  const Bb = new Uint16Array(B.length);
  k.toBf16(A, Ab, A.length);
  k.toBf16(B, Bb, B.length);
  return { c, lda, ldb, A, B, Ab, Bb, C: new Float32Array(c.M * c.N) };
});
const product = (r: (typeof runs)[number], C: Float32Array) => {
  const { c } = r;
  if (c.out16) {
    // The product rounded to bf16 as oneDNN writes it, widened back for the check.
    const C16 = new Uint16Array(C.length);
    k.sgemmBf16(c.ta, c.tb, c.M, c.N, c.K, 1, r.Ab, r.lda, r.Bb, r.ldb, 0, C16, c.N);
    k.fromBf16(C16, C, C.length);
  } else if (c.bf16) k.gemmBf16(c.ta, c.tb, c.M, c.N, c.K, 1, r.Ab, r.lda, r.Bb, r.ldb, c.beta, C, c.N);
  else k.sgemm(c.ta, c.tb, c.M, c.N, c.K, 1, r.A, r.lda, r.B, r.ldb, c.beta, C, c.N);
};
const t0 = Date.now();
let garbage: unknown[] = []; // JS allocations between products, so a corrupted heap is touched and noticed
while (Date.now() - t0 < seconds * 1000) {
  for (const r of runs) {
    product(r, r.C);
    garbage.push({ at: Date.now(), list: [1, 2, 3] });
    if (garbage.length > 2000) garbage = [];
  }
}
for (const r of runs) {
  const { c } = r;
  const got = new Float32Array(c.M * c.N).fill(0.25);
  product(r, got);
  const want = new Float32Array(c.M * c.N).fill(0.25);
  // bf16 cases: the reference multiplies the rounded operands, widened back (exact), in f32.
  const A = c.bf16 ? new Float32Array(r.A.length) : r.A;
  const B = c.bf16 ? new Float32Array(r.B.length) : r.B;
  if (c.bf16) {
    k.fromBf16(r.Ab, A, A.length);
    k.fromBf16(r.Bb, B, B.length);
  }
  ref.sgemm(c.ta, c.tb, c.M, c.N, c.K, 1, A, r.lda, B, r.ldb, c.beta, want, c.N);
  // A bf16 C is within half a bf16 ulp of the f32 result (2⁻⁹ relative), plus the f32 tolerance.
  for (let i = 0; i < want.length; i++)
    if (Math.abs(got[i]! - want[i]!) > 1e-3 + (c.out16 ? Math.abs(want[i]!) * 2 ** -8 : 0))
      throw new Error(`case ${JSON.stringify(c)} differs at ${i}`);
}
console.log('ok');
