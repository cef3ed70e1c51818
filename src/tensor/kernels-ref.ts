// Plain-TypeScript reference of every kernel in kernels-api.ts. It is the oracle the native addon is tested
// against, and the fallback selected with MOE_ACTORS_KERNELS=ts. Written for obvious correctness, not speed:
// straight loops in the order the math is written, sums accumulated in float64 (JS numbers) and rounded to
// float32 once when stored. Where torch rounds an intermediate to float32 on purpose (RoPE, AdamW), the
// reference rounds with Math.fround at the same place, so it models torch rather than exact arithmetic.
import { bf16ToF32, f32ToBf16 } from './bf16.ts';
import type { BlasInfo, Kernels, MatmulLibrary } from './kernels-api.ts';

const IGNORE_INDEX = -100;

function need(arr: ArrayLike<number>, n: number, what: string, kernel: string): void {
  if (arr.length < n) {
    throw new RangeError(`${kernel}: ${what} has ${arr.length} elements, needs at least ${n}`);
  }
}

function checkId(id: number, limit: number, row: number, what: string, kernel: string): void {
  if (!(id >= 0 && id < limit)) {
    throw new RangeError(`${kernel}: ${what}[${row}] = ${id} is outside [0, ${limit})`);
  }
}

/**
 * The GQA group and every attention array's length, in argument order: q, o, dout, dq (B,S,Hq,·), k, v, dk, dv
 * (B,S,Hkv,·), lse (B,Hq,S).
 */
function needAttention(
  kernel: string,
  s: { B: number; S: number; Hq: number; Hkv: number; dk: number; dv: number },
  a: Partial<Record<'dout' | 'q' | 'k' | 'v' | 'o' | 'lse' | 'dq' | 'dk' | 'dv', ArrayLike<number>>>,
): void {
  checkHeads(s.Hq, s.Hkv, kernel);
  const nq = s.B * s.S * s.Hq;
  const nkv = s.B * s.S * s.Hkv;
  const sizes = {
    dout: nq * s.dv,
    q: nq * s.dk,
    k: nkv * s.dk,
    v: nkv * s.dv,
    o: nq * s.dv,
    lse: s.B * s.Hq * s.S,
    dq: nq * s.dk,
    dk: nkv * s.dk,
    dv: nkv * s.dv,
  };
  for (const [name, n] of Object.entries(sizes)) {
    const arr = a[name as keyof typeof sizes];
    if (arr) need(arr, n, name, kernel);
  }
}

function checkEvenHeads(dk: number, dv: number, kernel: string): void {
  if (dk % 2 !== 0 || dv % 2 !== 0)
    throw new RangeError(
      `${kernel}: head dims dk = ${dk}, dv = ${dv} must be even (bf16 attention multiplies pairs of bf16; use the f32 attention for odd head dims)`,
    );
}

/** bf16 bits widened exactly (the attention references compute in float64). */
const wide = (a: Uint16Array): Float64Array => Float64Array.from(a, bf16ToF32);
/** x rounded to the nearest bf16 value. */
const r16 = (x: number): number => bf16ToF32(f32ToBf16(x));

// Attention's forward in float64 over (widened) inputs: the unnormalised probabilities exp(s − max) pass through
// `round` before they multiply v (the row sum is of the unrounded ones), and each output element o = Σ p·v / Σ p is
// handed to `store`. The identity and a plain f32 store for the f32 kernel; for the bf16 one, the bf16 rounding
// (torch's online softmax rounds them so) and a bf16 store.
function attnFwdCore(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  lse: Float32Array,
  B: number,
  S: number,
  Hq: number,
  Hkv: number,
  dk: number,
  dv: number,
  scale: number,
  round: (x: number) => number,
  store: (i: number, x: number) => void,
): void {
  const group = Hq / Hkv;
  const s = new Float64Array(S);
  const acc = new Float64Array(dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < S; i++) {
        const qo = ((b * S + i) * Hq + h) * dk;
        let m = -Infinity;
        for (let j = 0; j <= i; j++) {
          const ko = ((b * S + j) * Hkv + hk) * dk;
          let dot = 0;
          for (let d = 0; d < dk; d++) dot += q[qo + d]! * k[ko + d]!;
          s[j] = scale * dot;
          if (s[j]! > m) m = s[j]!;
        }
        let sum = 0;
        acc.fill(0);
        for (let j = 0; j <= i; j++) {
          const e = Math.exp(s[j]! - m);
          sum += e;
          const p = round(e);
          const vo = ((b * S + j) * Hkv + hk) * dv;
          for (let d = 0; d < dv; d++) acc[d] += p * v[vo + d]!;
        }
        lse[(b * Hq + h) * S + i] = m + Math.log(sum);
        const oo = ((b * S + i) * Hq + h) * dv;
        for (let d = 0; d < dv; d++) store(oo + d, acc[d]! / sum);
      }
    }
  }
}

// Attention's backward in float64 over (widened) inputs, p and ds passed through `round` where they multiply (dv +=
// p·do; dq += ds·k, dk += ds·q): the identity for the f32 kernel, the bf16 rounding for the bf16 one.
function attnBwdCore(
  dout: ArrayLike<number>,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  o: ArrayLike<number>,
  lse: Float32Array,
  dq: Float32Array,
  dkOut: Float32Array,
  dvOut: Float32Array,
  B: number,
  S: number,
  Hq: number,
  Hkv: number,
  dk: number,
  dv: number,
  scale: number,
  round: (x: number) => number,
): void {
  const group = Hq / Hkv;
  const dqAcc = new Float64Array(B * S * Hq * dk);
  const dkAcc = new Float64Array(B * S * Hkv * dk);
  const dvAcc = new Float64Array(B * S * Hkv * dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < S; i++) {
        const qo = ((b * S + i) * Hq + h) * dk;
        const oo = ((b * S + i) * Hq + h) * dv;
        const l = lse[(b * Hq + h) * S + i]!;
        let delta = 0;
        for (let d = 0; d < dv; d++) delta += dout[oo + d]! * o[oo + d]!;
        for (let j = 0; j <= i; j++) {
          const ko = ((b * S + j) * Hkv + hk) * dk;
          const vo = ((b * S + j) * Hkv + hk) * dv;
          let dot = 0;
          for (let d = 0; d < dk; d++) dot += q[qo + d]! * k[ko + d]!;
          const p = Math.exp(scale * dot - l);
          const pr = round(p);
          let dp = 0;
          for (let d = 0; d < dv; d++) {
            dp += dout[oo + d]! * v[vo + d]!;
            dvAcc[vo + d] += pr * dout[oo + d]!;
          }
          const ds = round(p * (dp - delta) * scale);
          for (let d = 0; d < dk; d++) {
            dqAcc[qo + d] += ds * k[ko + d]!;
            dkAcc[ko + d] += ds * q[qo + d]!;
          }
        }
      }
    }
  }
  dq.set(dqAcc);
  dkOut.set(dkAcc);
  dvOut.set(dvAcc);
}

function widen(h: Uint16Array, n: number): Float32Array {
  return Float32Array.from(h.subarray(0, n), bf16ToF32);
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

export class RefKernels implements Kernels {
  readonly impl = 'ts' as const;
  private threads = 1;

  // The reference is single-threaded; the count is only remembered so blasInfo() reports what was asked.
  setNumThreads(n: number): void {
    this.threads = n;
  }

  blasInfo(): BlasInfo {
    return { name: 'ts', threads: this.threads };
  }

  // C (M,N) = alpha · op(A) (M,K) · op(B) (K,N) + beta · C. beta = 0 overwrites C (BLAS convention: C is not read,
  // so NaN garbage in a fresh buffer does not leak through).
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    beta: number,
    C: Float32Array,
    ldc: number,
  ): void {
    if (M === 0 || N === 0) return;
    need(C, (M - 1) * ldc + N, 'C', 'sgemm');
    if (K > 0) {
      need(A, transA ? (K - 1) * lda + M : (M - 1) * lda + K, 'A', 'sgemm');
      need(B, transB ? (N - 1) * ldb + K : (K - 1) * ldb + N, 'B', 'sgemm');
    }
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let p = 0; p < K; p++) {
          const a = transA ? A[p * lda + i]! : A[i * lda + p]!;
          const b = transB ? B[j * ldb + p]! : B[p * ldb + j]!;
          s += a * b;
        }
        const c = beta === 0 ? 0 : beta * C[i * ldc + j]!;
        C[i * ldc + j] = alpha * s + c;
      }
    }
  }

  // One implementation here: the choice is accepted (so callers need not branch) and has no effect.
  setMatmulLibrary(_lib: MatmulLibrary): void {}

  // bf16 inputs are exact in f32 (and their products in f64), so widening and the f64-sum sgemm is the oracle.
  gemmBf16(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Uint16Array,
    lda: number,
    B: Uint16Array,
    ldb: number,
    beta: number,
    C: Float32Array,
    ldc: number,
  ): void {
    const wa = new Float32Array(A.length);
    const wb = new Float32Array(B.length);
    this.fromBf16(A, wa, A.length);
    this.fromBf16(B, wb, B.length);
    this.sgemm(transA, transB, M, N, K, alpha, wa, lda, wb, ldb, beta, C, ldc);
  }

  sgemmBf16Groups(
    transA: boolean,
    transB: boolean,
    dims: Int32Array,
    offs: Int32Array,
    alpha: number,
    A: Float32Array | Uint16Array,
    lda: number,
    B: Float32Array | Uint16Array,
    ldb: number,
    beta: number,
    C: Float32Array | Uint16Array,
    ldc: number,
  ): void {
    if (dims.length % 3 !== 0 || offs.length !== dims.length)
      throw new RangeError(
        `sgemmBf16Groups: dims and offs hold M, N, K and the A, B, C offsets of each group: equal lengths, a multiple of 3 (got ${dims.length} and ${offs.length})`,
      );
    for (let i = 0; i < dims.length; i += 3) {
      const [M, N, K] = [dims[i]!, dims[i + 1]!, dims[i + 2]!];
      if (M === 0 || N === 0) continue;
      this.sgemmBf16(
        transA,
        transB,
        M,
        N,
        K,
        alpha,
        A.subarray(offs[i]!),
        lda,
        B.subarray(offs[i + 1]!),
        ldb,
        beta,
        C.subarray(offs[i + 2]!),
        ldc,
      );
    }
  }

  sgemmBf16(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Float32Array | Uint16Array,
    lda: number,
    B: Float32Array | Uint16Array,
    ldb: number,
    beta: number,
    C: Float32Array | Uint16Array,
    ldc: number,
  ): void {
    const round = (x: Float32Array | Uint16Array): Uint16Array => {
      if (x instanceof Uint16Array) return x;
      const h = new Uint16Array(x.length);
      this.toBf16(x, h, x.length);
      return h;
    };
    const a = round(A);
    const b = round(B);
    if (C instanceof Float32Array) {
      this.gemmBf16(transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, C, ldc);
      return;
    }
    if (alpha !== 1 || beta !== 0)
      throw new RangeError(
        'sgemmBf16: a bf16 C (Uint16Array) takes alpha = 1 and beta = 0: the product is rounded once, never accumulated',
      );
    need(C, M === 0 || N === 0 ? 0 : (M - 1) * ldc + N, 'C', 'sgemmBf16');
    // The f32 product, then each element rounded once into C's rows.
    const f = new Float32Array(M * N);
    this.gemmBf16(transA, transB, M, N, K, 1, a, lda, b, ldb, 0, f, N);
    const row = new Uint16Array(N);
    for (let r = 0; r < M; r++) {
      this.toBf16(f.subarray(r * N, (r + 1) * N), row, N);
      C.set(row, r * ldc);
    }
  }

  toBf16(src: Float32Array, dst: Uint16Array, n: number): void {
    need(src, n, 'src', 'toBf16');
    need(dst, n, 'dst', 'toBf16');
    const u = new Uint32Array(src.buffer, src.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const x = u[i]!;
      if ((x & 0x7fffffff) > 0x7f800000) dst[i] = (x >>> 16) | 0x40;
      else dst[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }

  toBf16Rows(src: Float32Array, lds: number, rows: number, cols: number, dst: Uint16Array, ldd: number): void {
    if (lds < cols || ldd < cols)
      throw new RangeError(`toBf16Rows: leading dimensions lds = ${lds}, ldd = ${ldd} must be at least cols = ${cols}`);
    if (rows === 0 || cols === 0) return;
    need(src, (rows - 1) * lds + cols, 'src', 'toBf16Rows');
    need(dst, (rows - 1) * ldd + cols, 'dst', 'toBf16Rows');
    for (let r = 0; r < rows; r++)
      this.toBf16(src.subarray(r * lds, r * lds + cols), dst.subarray(r * ldd, r * ldd + cols), cols);
  }

  fromBf16(src: Uint16Array, dst: Float32Array, n: number): void {
    need(src, n, 'src', 'fromBf16');
    need(dst, n, 'dst', 'fromBf16');
    const u = new Uint32Array(dst.buffer, dst.byteOffset, n);
    for (let i = 0; i < n; i++) u[i] = src[i]! << 16;
  }

  // x (N,D), w (D) → y (N,D), rstd (N): y = x · rstd · w, rstd = 1/sqrt(mean(x²) + eps).
  rmsnormFwd(
    x: Float32Array,
    w: Float32Array,
    y: Float32Array | Uint16Array,
    rstd: Float32Array,
    N: number,
    D: number,
    eps: number,
    residual?: Float32Array | null,
  ): void {
    if (y instanceof Uint16Array) {
      need(y, N * D, 'y', 'rmsnormFwd');
      const f = new Float32Array(N * D);
      this.rmsnormFwd(x, w, f, rstd, N, D, eps, residual);
      this.toBf16(f, y, N * D);
      return;
    }
    need(x, N * D, 'x', 'rmsnormFwd');
    if (residual) {
      need(residual, N * D, 'residual', 'rmsnormFwd');
      this.add(residual, x, x, N * D);
    }
    need(y, N * D, 'y', 'rmsnormFwd');
    need(w, D, 'w', 'rmsnormFwd');
    need(rstd, N, 'rstd', 'rmsnormFwd');
    for (let n = 0; n < N; n++) {
      const o = n * D;
      let ss = 0;
      for (let d = 0; d < D; d++) ss += x[o + d]! * x[o + d]!;
      const r = 1 / Math.sqrt(ss / D + eps);
      rstd[n] = r;
      for (let d = 0; d < D; d++) y[o + d] = x[o + d]! * r * w[d]!;
    }
  }

  // With x̂ = x·rstd and g = dy·w: dx = rstd · (g − x̂ · mean(g·x̂)); dw += Σ_rows dy · x̂.
  rmsnormBwd(
    dy: Float32Array,
    x: Float32Array,
    w: Float32Array,
    rstd: Float32Array,
    dx: Float32Array,
    dw: Float32Array,
    N: number,
    D: number,
    extra?: Float32Array | null,
  ): void {
    for (const [a, nm] of [
      [dy, 'dy'],
      [x, 'x'],
      [dx, 'dx'],
    ] as const)
      need(a, N * D, nm, 'rmsnormBwd');
    if (extra) need(extra, N * D, 'extra', 'rmsnormBwd');
    need(w, D, 'w', 'rmsnormBwd');
    need(dw, D, 'dw', 'rmsnormBwd');
    need(rstd, N, 'rstd', 'rmsnormBwd');
    const dwAcc = new Float64Array(D);
    for (let n = 0; n < N; n++) {
      const o = n * D;
      const r = rstd[n]!;
      let dot = 0;
      for (let d = 0; d < D; d++) dot += dy[o + d]! * w[d]! * x[o + d]! * r;
      const c = dot / D;
      for (let d = 0; d < D; d++) {
        const xh = x[o + d]! * r;
        dx[o + d] = r * (dy[o + d]! * w[d]! - xh * c);
        if (extra) dx[o + d] = dx[o + d]! + extra[o + d]!;
        dwAcc[d] += dy[o + d]! * xh;
      }
    }
    for (let d = 0; d < D; d++) dw[d] += dwAcc[d]!;
  }

  // a, b (n) → h (n): h = silu(a) · b, silu(a) = a · σ(a).
  swigluFwd(a: Float32Array, b: Float32Array, h: Float32Array, n: number): void {
    need(a, n, 'a', 'swigluFwd');
    need(b, n, 'b', 'swigluFwd');
    need(h, n, 'h', 'swigluFwd');
    for (let i = 0; i < n; i++) h[i] = a[i]! * sigmoid(a[i]!) * b[i]!;
  }

  // da = dh · b · σ(a)·(1 + a·(1 − σ(a))), db = dh · silu(a). da/db may alias dh (each element is read first).
  swigluBwd(dh: Float32Array, a: Float32Array, b: Float32Array, da: Float32Array, db: Float32Array, n: number): void {
    for (const [arr, nm] of [
      [dh, 'dh'],
      [a, 'a'],
      [b, 'b'],
      [da, 'da'],
      [db, 'db'],
    ] as const)
      need(arr, n, nm, 'swigluBwd');
    for (let i = 0; i < n; i++) {
      const ai = a[i]!;
      const bi = b[i]!;
      const g = dh[i]!;
      const s = sigmoid(ai);
      da[i] = g * bi * s * (1 + ai * (1 - s));
      db[i] = g * ai * s;
    }
  }

  // The f32 kernels on the widened inputs, each output rounded to bf16.
  swigluFwdBf16(a: Uint16Array, b: Uint16Array, h: Uint16Array, n: number): void {
    need(a, n, 'a', 'swigluFwdBf16');
    need(b, n, 'b', 'swigluFwdBf16');
    need(h, n, 'h', 'swigluFwdBf16');
    const f = new Float32Array(n);
    this.swigluFwd(widen(a, n), widen(b, n), f, n);
    this.toBf16(f, h, n);
  }

  swigluBwdBf16(dh: Float32Array, a: Uint16Array, b: Uint16Array, da: Uint16Array, db: Uint16Array, n: number): void {
    need(dh, n, 'dh', 'swigluBwdBf16');
    need(a, n, 'a', 'swigluBwdBf16');
    need(b, n, 'b', 'swigluBwdBf16');
    need(da, n, 'da', 'swigluBwdBf16');
    need(db, n, 'db', 'swigluBwdBf16');
    const fa = new Float32Array(n);
    const fb = new Float32Array(n);
    this.swigluBwd(dh, widen(a, n), widen(b, n), fa, fb, n);
    this.toBf16(fa, da, n);
    this.toBf16(fb, db, n);
  }

  // x rows (rows = B·S) with heads at headStride; pairs (2i, 2i+1) at offset within each head; cos, sin (S, dim/2).
  // Products and sums are rounded to float32 as torch does (fp32 complex multiply).
  rope(
    x: Float32Array,
    cos: Float32Array,
    sin: Float32Array,
    rows: number,
    S: number,
    heads: number,
    rowStride: number,
    headStride: number,
    offset: number,
    dim: number,
    inverse: boolean,
  ): void {
    if (dim % 2 !== 0) throw new RangeError(`rope: dim = ${dim} must be even (pairs)`);
    if (rows === 0 || heads === 0 || dim === 0) return;
    const half = dim / 2;
    need(x, (rows - 1) * rowStride + (heads - 1) * headStride + offset + dim, 'x', 'rope');
    need(cos, Math.min(rows, S) * half, 'cos', 'rope');
    need(sin, Math.min(rows, S) * half, 'sin', 'rope');
    const f = Math.fround;
    for (let r = 0; r < rows; r++) {
      const p = r % S;
      for (let h = 0; h < heads; h++) {
        const base = r * rowStride + h * headStride + offset;
        for (let i = 0; i < half; i++) {
          const c = cos[p * half + i]!;
          const s = inverse ? -sin[p * half + i]! : sin[p * half + i]!;
          const x0 = x[base + 2 * i]!;
          const x1 = x[base + 2 * i + 1]!;
          x[base + 2 * i] = f(f(x0 * c) - f(x1 * s));
          x[base + 2 * i + 1] = f(f(x0 * s) + f(x1 * c));
        }
      }
    }
  }
  ropeBf16(
    x: Float32Array,
    cos: Float32Array,
    sin: Float32Array,
    rows: number,
    S: number,
    heads: number,
    rowStride: number,
    headStride: number,
    offset: number,
    dim: number,
    inverse: boolean,
    out: Uint16Array,
    outRowStride: number,
  ): void {
    if (dim % 2 !== 0) throw new RangeError(`ropeBf16: dim = ${dim} must be even (pairs)`);
    if (rows === 0 || heads === 0 || dim === 0) return;
    need(x, (rows - 1) * rowStride + (heads - 1) * headStride + offset + dim, 'x', 'ropeBf16');
    need(out, (rows - 1) * outRowStride + (heads - 1) * headStride + offset + dim, 'out', 'ropeBf16');
    // The rotation of a copy of each row's heads, rounded pair by pair into out.
    const span = (heads - 1) * headStride + offset + dim;
    const row = new Float32Array(span);
    for (let r = 0; r < rows; r++) {
      row.set(x.subarray(r * rowStride, r * rowStride + span));
      this.rope(
        row,
        cos.subarray((r % S) * (dim / 2)),
        sin.subarray((r % S) * (dim / 2)),
        1,
        1,
        heads,
        span,
        headStride,
        offset,
        dim,
        inverse,
      );
      for (let h = 0; h < heads; h++) {
        const at = h * headStride + offset;
        this.toBf16(row.subarray(at, at + dim), out.subarray(r * outRowStride + at, r * outRowStride + at + dim), dim);
      }
    }
  }

  // q (B,S,Hq,dk), k (B,S,Hkv,dk), v (B,S,Hkv,dv) → o (B,S,Hq,dv), lse (B,Hq,S).
  // s_ij = scale · q_i·k_j for j ≤ i; lse_i = log Σ_j exp(s_ij); o_i = Σ_j exp(s_ij − lse_i) · v_j.
  attentionFwd(
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array,
    lse: Float32Array,
    B: number,
    S: number,
    Hq: number,
    Hkv: number,
    dk: number,
    dv: number,
    scale: number,
  ): void {
    needAttention('attentionFwd', { B, S, Hq, Hkv, dk, dv }, { q, k, v, o, lse });
    attnFwdCore(
      q,
      k,
      v,
      lse,
      B,
      S,
      Hq,
      Hkv,
      dk,
      dv,
      scale,
      (x) => x,
      (i, x) => {
        o[i] = x;
      },
    );
  }

  // With p_ij = exp(s_ij − lse_i), Δ_i = do_i·o_i, dp_ij = do_i·v_j, ds_ij = p_ij·(dp_ij − Δ_i):
  //   dq_i = scale · Σ_j ds_ij k_j;  dk_j = scale · Σ_i ds_ij q_i;  dv_j = Σ_i p_ij do_i
  // (dk, dv summed over the query heads that share a kv head).
  attentionBwd(
    dout: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array,
    lse: Float32Array,
    dq: Float32Array,
    dkOut: Float32Array,
    dvOut: Float32Array,
    B: number,
    S: number,
    Hq: number,
    Hkv: number,
    dk: number,
    dv: number,
    scale: number,
  ): void {
    needAttention('attentionBwd', { B, S, Hq, Hkv, dk, dv }, { dout, q, k, v, o, lse, dq, dk: dkOut, dv: dvOut });
    attnBwdCore(dout, q, k, v, o, lse, dq, dkOut, dvOut, B, S, Hq, Hkv, dk, dv, scale, (x) => x);
  }

  // bf16 inputs, modelling torch's CPU flash attention under bf16: the inputs widened exactly, sums in float64,
  // the probabilities rounded to bf16 before they multiply v (unnormalised, exp(s − max), as its online softmax
  // rounds them; the row sum is of the unrounded ones), o rounded to bf16 once.
  attentionFwdBf16(
    q: Uint16Array,
    k: Uint16Array,
    v: Uint16Array,
    o: Uint16Array,
    lse: Float32Array,
    B: number,
    S: number,
    Hq: number,
    Hkv: number,
    dk: number,
    dv: number,
    scale: number,
  ): void {
    checkEvenHeads(dk, dv, 'attentionFwdBf16');
    needAttention('attentionFwdBf16', { B, S, Hq, Hkv, dk, dv }, { q, k, v, o, lse });
    attnFwdCore(wide(q), wide(k), wide(v), lse, B, S, Hq, Hkv, dk, dv, scale, r16, (i, x) => {
      o[i] = f32ToBf16(x);
    });
  }

  // As attentionBwd on widened bf16 inputs, with p and ds rounded to bf16 where they multiply (dv += p·do,
  // dq += ds·k, dk += ds·q), as torch rounds them before its bf16 GEMMs.
  attentionBwdBf16(
    dout: Uint16Array,
    q: Uint16Array,
    k: Uint16Array,
    v: Uint16Array,
    o: Uint16Array,
    lse: Float32Array,
    dq: Float32Array,
    dkOut: Float32Array,
    dvOut: Float32Array,
    B: number,
    S: number,
    Hq: number,
    Hkv: number,
    dk: number,
    dv: number,
    scale: number,
  ): void {
    checkEvenHeads(dk, dv, 'attentionBwdBf16');
    needAttention('attentionBwdBf16', { B, S, Hq, Hkv, dk, dv }, { dout, q, k, v, o, lse, dq, dk: dkOut, dv: dvOut });
    attnBwdCore(
      wide(dout),
      wide(q),
      wide(k),
      wide(v),
      wide(o),
      lse,
      dq,
      dkOut,
      dvOut,
      B,
      S,
      Hq,
      Hkv,
      dk,
      dv,
      scale,
      r16,
    );
  }

  // logits (N,V), labels (N) → lse (N); returns Σ_valid (lse − logit[label]). Ignored rows: lse = 0, no loss.
  crossEntropyFwd(logits: Float32Array, labels: Int32Array, lse: Float32Array, N: number, V: number): number {
    need(logits, N * V, 'logits', 'crossEntropyFwd');
    need(labels, N, 'labels', 'crossEntropyFwd');
    need(lse, N, 'lse', 'crossEntropyFwd');
    let loss = 0;
    for (let n = 0; n < N; n++) {
      const y = labels[n]!;
      if (y === IGNORE_INDEX) {
        lse[n] = 0;
        continue;
      }
      checkId(y, V, n, 'labels', 'crossEntropyFwd');
      const o = n * V;
      let m = -Infinity;
      for (let j = 0; j < V; j++) if (logits[o + j]! > m) m = logits[o + j]!;
      let sum = 0;
      for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j]! - m);
      const l = m + Math.log(sum);
      lse[n] = l;
      loss += l - logits[o + y]!;
    }
    return loss;
  }

  // dlogits (N,V) = (softmax − onehot) · scale, 0 for ignored rows. Safe when dlogits aliases logits: each row is
  // read element by element before that element is written.
  crossEntropyBwd(
    logits: Float32Array,
    labels: Int32Array,
    lse: Float32Array,
    dlogits: Float32Array | Uint16Array,
    N: number,
    V: number,
    scale: number,
  ): void {
    if (dlogits instanceof Uint16Array) {
      // The f32 gradient row by row, each rounded to bf16 as the native kernel stores it.
      need(dlogits, N * V, 'dlogits', 'crossEntropyBwd');
      const row = new Float32Array(V);
      for (let n = 0; n < N; n++) {
        this.crossEntropyBwd(
          logits.subarray(n * V),
          labels.subarray(n, n + 1),
          lse.subarray(n, n + 1),
          row,
          1,
          V,
          scale,
        );
        this.toBf16(row, dlogits.subarray(n * V), V);
      }
      return;
    }
    need(logits, N * V, 'logits', 'crossEntropyBwd');
    need(dlogits, N * V, 'dlogits', 'crossEntropyBwd');
    need(labels, N, 'labels', 'crossEntropyBwd');
    need(lse, N, 'lse', 'crossEntropyBwd');
    for (let n = 0; n < N; n++) {
      const y = labels[n]!;
      const o = n * V;
      if (y === IGNORE_INDEX) {
        dlogits.fill(0, o, o + V);
        continue;
      }
      checkId(y, V, n, 'labels', 'crossEntropyBwd');
      const l = lse[n]!;
      for (let j = 0; j < V; j++) {
        const p = Math.exp(logits[o + j]! - l);
        dlogits[o + j] = (p - (j === y ? 1 : 0)) * scale;
      }
    }
  }

  // table (V,D), ids (N) → out (N,D).
  embeddingFwd(table: Float32Array, ids: Int32Array, out: Float32Array, N: number, D: number): void {
    need(ids, N, 'ids', 'embeddingFwd');
    need(out, N * D, 'out', 'embeddingFwd');
    const V = D === 0 ? Infinity : Math.floor(table.length / D);
    for (let n = 0; n < N; n++) {
      const id = ids[n]!;
      checkId(id, V, n, 'ids', 'embeddingFwd');
      for (let d = 0; d < D; d++) out[n * D + d] = table[id * D + d]!;
    }
  }

  // dout (N,D), ids (N) → dtable (V,D) += scatter (repeated ids add up, in row order).
  embeddingBwd(dout: Float32Array, ids: Int32Array, dtable: Float32Array, N: number, D: number): void {
    need(ids, N, 'ids', 'embeddingBwd');
    need(dout, N * D, 'dout', 'embeddingBwd');
    const V = D === 0 ? Infinity : Math.floor(dtable.length / D);
    for (let n = 0; n < N; n++) {
      const id = ids[n]!;
      checkId(id, V, n, 'ids', 'embeddingBwd');
      for (let d = 0; d < D; d++) dtable[id * D + d] += dout[n * D + d]!;
    }
  }

  // out[r] = src[idx[r]] · (scale ? scale[r] : 1). src (·,D), idx (R), out (R,D).
  gatherRows(
    src: Float32Array,
    idx: Int32Array,
    out: Float32Array,
    R: number,
    D: number,
    scale: Float32Array | null,
  ): void {
    need(idx, R, 'idx', 'gatherRows');
    need(out, R * D, 'out', 'gatherRows');
    if (scale) need(scale, R, 'scale', 'gatherRows');
    const rowsSrc = D === 0 ? Infinity : Math.floor(src.length / D);
    for (let r = 0; r < R; r++) {
      const i = idx[r]!;
      checkId(i, rowsSrc, r, 'idx', 'gatherRows');
      const s = scale ? scale[r]! : 1;
      for (let d = 0; d < D; d++) out[r * D + d] = src[i * D + d]! * s;
    }
  }

  // out[idx[r]] += src[r] · (scale ? scale[r] : 1). src (R,D), out (·,D).
  scatterAddRows(
    src: Float32Array,
    idx: Int32Array,
    out: Float32Array,
    R: number,
    D: number,
    scale: Float32Array | null,
  ): void {
    need(idx, R, 'idx', 'scatterAddRows');
    need(src, R * D, 'src', 'scatterAddRows');
    if (scale) need(scale, R, 'scale', 'scatterAddRows');
    const rowsOut = D === 0 ? Infinity : Math.floor(out.length / D);
    for (let r = 0; r < R; r++) {
      const i = idx[r]!;
      checkId(i, rowsOut, r, 'idx', 'scatterAddRows');
      const s = scale ? scale[r]! : 1;
      for (let d = 0; d < D; d++) out[i * D + d] += src[r * D + d]! * s;
    }
  }

  // dots[r] = Σ_d a[idx[r], d] · b[r, d]. a (·,D), b (R,D), dots (R).
  gatherRowDot(a: Float32Array, idx: Int32Array, b: Float32Array, dots: Float32Array, R: number, D: number): void {
    need(idx, R, 'idx', 'gatherRowDot');
    need(b, R * D, 'b', 'gatherRowDot');
    need(dots, R, 'dots', 'gatherRowDot');
    const rowsA = D === 0 ? Infinity : Math.floor(a.length / D);
    for (let r = 0; r < R; r++) {
      const i = idx[r]!;
      checkId(i, rowsA, r, 'idx', 'gatherRowDot');
      let s = 0;
      for (let d = 0; d < D; d++) s += a[i * D + d]! * b[r * D + d]!;
      dots[r] = s;
    }
  }

  // torch AdamW (decoupled decay), in the operation order of torch's fused CPU kernel: scalars (bias corrections,
  // step size) in double, then cast to float32 and used in float32 arithmetic per element:
  //   p·(1−lr·wd); m·β1 + g·(1−β1); v·β2 + g·g·(1−β2); denom = sqrt(v)/sqrt(bc2) + eps; p − (step_size·m)/denom.
  adamw(
    p: Float32Array,
    g: Float32Array,
    m: Float32Array,
    v: Float32Array,
    n: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    wd: number,
    step: number,
    gradScale = 1,
  ): void {
    if (!(step >= 1)) throw new RangeError(`adamw: step = ${step}, must be ≥ 1 (1-based)`);
    for (const [arr, nm] of [
      [p, 'p'],
      [g, 'g'],
      [m, 'm'],
      [v, 'v'],
    ] as const)
      need(arr, n, nm, 'adamw');
    const f = Math.fround;
    const bc1 = 1 - Math.pow(beta1, step);
    const bc2 = 1 - Math.pow(beta2, step);
    const decay = f(1 - lr * wd);
    const b1 = f(beta1);
    const c1 = f(1 - beta1);
    const b2 = f(beta2);
    const c2 = f(1 - beta2);
    const stepSize = f(lr / bc1);
    const bc2sqrt = f(Math.sqrt(bc2));
    const e = f(eps);
    const gs = f(gradScale);
    for (let i = 0; i < n; i++) {
      const gi = f(g[i]! * gs);
      const pi = f(p[i]! * decay);
      const mi = f(f(m[i]! * b1) + f(gi * c1));
      const vi = f(f(v[i]! * b2) + f(f(gi * gi) * c2));
      const denom = f(f(f(Math.sqrt(vi)) / bc2sqrt) + e);
      m[i] = mi;
      v[i] = vi;
      p[i] = f(pi - f(f(stepSize * mi) / denom));
    }
  }

  add(a: Float32Array, b: Float32Array, out: Float32Array, n: number): void {
    need(a, n, 'a', 'add');
    need(b, n, 'b', 'add');
    need(out, n, 'out', 'add');
    for (let i = 0; i < n; i++) out[i] = a[i]! + b[i]!;
  }

  copy(src: Float32Array, dst: Float32Array, n: number, _stream: boolean): void {
    need(src, n, 'src', 'copy');
    need(dst, n, 'dst', 'copy');
    dst.set(src.subarray(0, n));
  }

  zero(x: Float32Array, n: number): void {
    need(x, n, 'x', 'zero');
    x.fill(0, 0, n);
  }

  axpy(alpha: number, x: Float32Array, y: Float32Array, n: number): void {
    need(x, n, 'x', 'axpy');
    need(y, n, 'y', 'axpy');
    for (let i = 0; i < n; i++) y[i] += alpha * x[i]!;
  }

  scale(x: Float32Array, alpha: number, n: number): void {
    need(x, n, 'x', 'scale');
    for (let i = 0; i < n; i++) x[i] *= alpha;
  }

  sumSquares(x: Float32Array, n: number): number {
    need(x, n, 'x', 'sumSquares');
    let s = 0;
    for (let i = 0; i < n; i++) s += x[i]! * x[i]!;
    return s;
  }
}

function checkHeads(Hq: number, Hkv: number, kernel: string): void {
  if (!(Hkv > 0 && Hq % Hkv === 0)) {
    throw new RangeError(`${kernel}: Hq = ${Hq} must be a positive multiple of Hkv = ${Hkv} (GQA groups)`);
  }
}
