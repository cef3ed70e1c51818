// The contract every kernel implementation meets: the native addon (native/kernels, CBLAS + fused C++) and the
// plain-TypeScript reference (kernels-ref.ts), which property tests compare against each other.
//
// Conventions: row-major; all arrays are caller-allocated; "write" means overwrite, "accumulate" means +=.
// Float32Array arguments may be views (subarray) into larger buffers. Index arrays are Int32Array.
// Shapes are given in the comment above each method; N = rows (tokens), D = row width.

export interface BlasInfo {
  name: 'openblas' | 'mkl' | 'ts';
  corename?: string;
  config?: string;
  threads: number;
  /** OpenBLAS only: where OPENBLAS_CORETYPE came from — the user's env, the addon's ISA-based choice, or OpenBLAS's own detection. */
  coretypeSource?: 'env' | 'auto' | 'openblas';
  /** Native only: OMP_WAIT_POLICY as libgomp saw it when the addon loaded (absent = libgomp's spinning default). */
  ompWaitPolicy?: string;
  /** OPENBLAS_THREAD_TIMEOUT the addon runs with, and whether the user ('env') or the loader ('auto') chose it. */
  threadTimeout?: string;
  threadTimeoutSource?: 'env' | 'auto';
  /** Native only: which library the sgemm entry uses — per shape class ('auto'), always oneDNN, or always BLAS. */
  matmulMode?: MatmulLibrary;
  /** Native only: oneDNN is built in and working; its version and effective ISA, or why it is not used. */
  onednn?: boolean;
  onednnVersion?: string;
  onednnIsa?: string;
  /** Native only: the library f32 matmuls take in this process (MOE_ACTORS_MATMUL, or auto's ISA rule). */
  f32Matmuls?: 'onednn' | 'blas';
  onednnStatus?: string;
  /** Native only: the CPU has bf16 dot-product instructions (AVX512_BF16 or AMX); without them bf16 matmuls widen to f32. */
  bf16Dot?: boolean;
}

/** The matmul library choice: by shape class (the measured rule), or one library for every call. */
export type MatmulLibrary = 'auto' | 'onednn' | 'blas';

export interface Kernels {
  readonly impl: 'native' | 'ts';

  /** Threads for BLAS and for the fused kernels of the calling thread. */
  setNumThreads(n: number): void;
  blasInfo(): BlasInfo;

  // C (M,N) = alpha · op(A) · op(B) + beta · C; op(A) is (M,K), op(B) is (K,N); lda/ldb/ldc are row strides.
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
  ): void;

  /** Chooses the matmul library for the process (native; the reference has one). Benches alternate with it. */
  setMatmulLibrary(lib: MatmulLibrary): void;

  // As sgemm with A and B in bfloat16 (Uint16Array of raw bf16 bits) and C float32: products of bf16 inputs
  // summed in f32 (torch's bf16 matmul on CPU). Without bf16 dot-product hardware the inputs are widened to f32.
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
  ): void;
  // sgemm's arguments, computed as bf16 mixed precision does: A and B rounded to bf16 (nearest even), products
  // summed in f32 into f32 C. Either operand may instead be bf16 bits (Uint16Array) the caller rounded once with
  // toBf16 for several products; the result is the same as passing its f32 source. C may be bf16 too, with
  // alpha = 1 and beta = 0: the f32 sums rounded once as they are written (a bf16 nn.Linear's output).
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
  ): void;
  // G independent sgemmBf16 products sharing transposes, leading dimensions, alpha and beta (a layer's routed
  // experts): dims holds each group's M, N, K, offs the element offsets of its A, B and C. Each group's result is
  // what sgemmBf16 gives for it; the native kernels run the groups side by side, each on one thread.
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
  ): void;
  // src (n) f32 → dst (n) bf16 bits, round to nearest even (NaN stays NaN).
  toBf16(src: Float32Array, dst: Uint16Array, n: number): void;
  // As toBf16 on a (rows, cols) block: src rows at stride lds → dst rows at stride ldd (lds, ldd ≥ cols), e.g. one
  // slice of a fused projection's output to a dense array of its own.
  toBf16Rows(src: Float32Array, lds: number, rows: number, cols: number, dst: Uint16Array, ldd: number): void;
  // src (n) bf16 bits → dst (n) f32 (exact).
  fromBf16(src: Uint16Array, dst: Float32Array, n: number): void;

  // x (N,D), w (D) → y (N,D) write, rstd (N) write: y = x · rstd · w, rstd = 1/sqrt(mean(x²) + eps).
  rmsnormFwd(
    x: Float32Array,
    w: Float32Array,
    /** f32, or bf16 bits (each value rounded once as it is stored: bf16 compute, where only products read y). */
    y: Float32Array | Uint16Array,
    rstd: Float32Array,
    N: number,
    D: number,
    eps: number,
    /** x ← x + residual first, in place (a residual add fused with the norm that reads its sum). */
    residual?: Float32Array | null,
  ): void;
  // dy, x (N,D), w (D), rstd (N) → dx (N,D) write, dw (D) accumulate.
  rmsnormBwd(
    dy: Float32Array,
    x: Float32Array,
    w: Float32Array,
    rstd: Float32Array,
    dx: Float32Array,
    dw: Float32Array,
    N: number,
    D: number,
    /** Added to every dx element as it is written (the residual branch's gradient): dx = norm's dx + extra. */
    extra?: Float32Array | null,
  ): void;

  // a, b (n) → h (n) write: h = silu(a) · b.
  swigluFwd(a: Float32Array, b: Float32Array, h: Float32Array, n: number): void;
  // dh, a, b (n) → da, db (n) write.
  swigluBwd(dh: Float32Array, a: Float32Array, b: Float32Array, da: Float32Array, db: Float32Array, n: number): void;

  // bf16 storage of the same: a, b (n) bf16 → h (n) bf16, and dh (n) f32 with a, b bf16 → da, db (n) bf16; the
  // math in f32 on the widened inputs, each output rounded once (what the f32 kernels give, rounded).
  swigluFwdBf16(a: Uint16Array, b: Uint16Array, h: Uint16Array, n: number): void;
  swigluBwdBf16(dh: Float32Array, a: Uint16Array, b: Uint16Array, da: Uint16Array, db: Uint16Array, n: number): void;

  // In-place rotary embedding on adjacent pairs (torchtitan): for row r (position p = r % S), head h, pair i < dim/2,
  // the pair sits at x[r·rowStride + h·headStride + offset + 2i, +1]:
  //   out[2i] = x[2i]·cos[p,i] − x[2i+1]·sin[p,i];  out[2i+1] = x[2i]·sin[p,i] + x[2i+1]·cos[p,i].
  // cos, sin: (S, dim/2). rows = B·S. Backward = the same with `inverse` (rotation by −φ).
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
  ): void;
  // As rope with x read only: the rotated pairs rounded to bf16 into out at out[r·outRowStride + h·headStride +
  // offset + 2i, +1] (nothing else of out is written): a bf16 q or k in one pass over its f32 source.
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
  ): void;

  // Causal scaled-dot-product attention with GQA (query head h uses kv head floor(h / (Hq/Hkv))).
  // q (B,S,Hq,dk), k (B,S,Hkv,dk), v (B,S,Hkv,dv) → o (B,S,Hq,dv) write, lse (B,Hq,S) write (log-sum-exp of the
  // scaled scores per query, saved for backward). Query i attends keys j ≤ i.
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
  ): void;
  // do (B,S,Hq,dv) with the forward's q, k, v, o, lse → dq (like q), dk (like k), dv (like v), all write.
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
  ): void;

  // The same attention on bf16 inputs (Uint16Array bits), as torch runs SDPA under bf16 compute: products of bf16
  // operands summed in f32, softmax and its statistics in f32, the probabilities and dS rounded to bf16 where they
  // enter a product. o is written in bf16; lse, dq, dk, dv are f32. Head dims must be even, and every bf16 array
  // must start on a 4-byte boundary (pairs of bf16 are read as one word).
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
  ): void;
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
  ): void;

  // logits (N,V), labels (N; −100 = ignore) → lse (N) write; returns Σ over valid rows of (lse − logit[label])
  // as a double. Ignored rows get lse = 0.
  crossEntropyFwd(logits: Float32Array, labels: Int32Array, lse: Float32Array, N: number, V: number): number;
  // → dlogits (N,V) write: (softmax − onehot) · scale for valid rows, 0 for ignored rows. dlogits may alias logits,
  // or be a Uint16Array: each value rounded to bf16 as it is stored (bf16 compute's output-projection products).
  crossEntropyBwd(
    logits: Float32Array,
    labels: Int32Array,
    lse: Float32Array,
    dlogits: Float32Array | Uint16Array,
    N: number,
    V: number,
    scale: number,
  ): void;

  // table (V,D), ids (N) → out (N,D) write.
  embeddingFwd(table: Float32Array, ids: Int32Array, out: Float32Array, N: number, D: number): void;
  // dout (N,D), ids (N) → dtable (V,D) accumulate (scatter-add; repeated ids add up).
  embeddingBwd(dout: Float32Array, ids: Int32Array, dtable: Float32Array, N: number, D: number): void;

  // MoE permute: out[r] = src[idx[r]] · (scale ? scale[r] : 1). src (·,D), idx (R), out (R,D) write.
  gatherRows(
    src: Float32Array,
    idx: Int32Array,
    out: Float32Array,
    R: number,
    D: number,
    scale: Float32Array | null,
  ): void;
  // MoE unpermute / permute backward: out[idx[r]] += src[r] · (scale ? scale[r] : 1). src (R,D), out (·,D) accumulate.
  scatterAddRows(
    src: Float32Array,
    idx: Int32Array,
    out: Float32Array,
    R: number,
    D: number,
    scale: Float32Array | null,
  ): void;
  // Gate gradient: dots[r] = Σ_d a[idx[r], d] · b[r, d]. a (·,D), b (R,D), dots (R) write.
  gatherRowDot(a: Float32Array, idx: Int32Array, b: Float32Array, dots: Float32Array, R: number, D: number): void;

  // AdamW with decoupled decay (torch semantics), step t ≥ 1, all (n):
  //   p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
  //   p ← p − (lr/(1−β1^t)) · m / (sqrt(v)/sqrt(1−β2^t) + eps)
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
    /** Each gradient read as g·gradScale (gradient clipping's coefficient, folded in); default 1. */
    gradScale?: number,
  ): void;

  // Elementwise helpers for residuals, accumulation and norms.
  // out = a + b (n); out may alias a or b.
  add(a: Float32Array, b: Float32Array, out: Float32Array, n: number): void;
  // src (n) → dst (n) write, bit for bit (no arithmetic: NaN payloads survive). stream: non-temporal stores, for
  // large copies whose destination is not read again soon (native; the reference ignores it).
  copy(src: Float32Array, dst: Float32Array, n: number, stream: boolean): void;
  // x (n) ← 0, every element (in parallel natively: the per-step zeroing of every gradient).
  zero(x: Float32Array, n: number): void;
  // y += alpha · x (n).
  axpy(alpha: number, x: Float32Array, y: Float32Array, n: number): void;
  // x ·= alpha (n).
  scale(x: Float32Array, alpha: number, n: number): void;
  // Σ x² (n) accumulated in double.
  sumSquares(x: Float32Array, n: number): number;
}
