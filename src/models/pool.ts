// Reusable activation storage. A training step allocates the same activation shapes every microbatch; allocating
// (and zero-filling) them afresh each time costs memory bandwidth and leaves large ArrayBuffers for the GC to find.
// The pool keeps released buffers by size class and hands them out again. Accounting stays exact: a buffer counts
// as "activations" in the rank's Allocator only between get() and release(); what the pool holds idle is reported
// separately as reservedBytes (torchtitan's reserved vs active). The same pool serves other categories of
// step-scoped buffers (FSDP's unsharded parameters and full gradients: `new ActivationPool(alloc, 'params')`), as
// PyTorch's caching allocator serves both: a freshly allocated large array is zero-filled by the OS page by page
// on first touch, which cost more than the collective that filled it (all_gather of 3.5 MB per rank on 2 worker
// threads: 5.4 ms into a new array, 1.1 ms into a reused one).
//
// The idle set is bounded: at most IDLE_BOUND × the most bytes this pool ever had handed out at once (its peak
// live set), evicting the least recently used size classes first. Unbounded, it grew for as long as new sizes kept
// appearing — MoE dispatch buffers follow the routing, so their size classes change from step to step — and a
// 300-step soak of the default job held ~210 MB of idle ArrayBuffers per rank (294 MB of ArrayBuffers against
// 80 MB tracked active), still growing after step 100.
//
// Why 2 and not 1: a step's buffers are never all live at once, so the set a step reuses is larger than its peak
// live set — the debugmodel's bf16 step reuses 290 MB against 263 MB peak live (1.10×). With the bound at 1× the
// pool evicted part of its own working set every step, least recently used first: the 16 MB logits (released at
// the start of backward) among them, so the next step's output projection wrote into fresh pages — 4,096 page
// faults, 29 ms on a 3.6 ms matmul (a page fault costs ~6 µs in this VM), ~2,500 faults per step in all. At 2×
// a step faults ~15–90 pages and the bound still holds when sizes keep changing.

import type { Allocator, Category } from '../tensor/allocator.ts';

/** Idle bytes allowed, as a multiple of the peak live bytes (see above). */
export const IDLE_BOUND = 2;

/** Size classes of 1/8 octave: at most 12.5 % of a buffer is unused. */
function sizeClass(n: number): number {
  if (n <= 64) return 64;
  const step = 2 ** (Math.floor(Math.log2(n)) - 3);
  return Math.ceil(n / step) * step;
}

export class ActivationPool {
  private readonly free = new Map<number, Float32Array[]>();
  /** view handed out → its whole base buffer. */
  private readonly bases = new WeakMap<Float32Array, Float32Array>();
  private idleBytes = 0;
  private live = 0;
  private liveBytes = 0;
  /** The most bytes handed out at once: the bound on idle bytes. */
  private peakLiveBytes = 0;

  constructor(
    private readonly alloc: Allocator,
    private readonly category: Category = 'activations',
  ) {}

  /** n floats, contents unspecified (callers that accumulate must use zeros()). */
  get(n: number): Float32Array {
    const cap = sizeClass(n);
    const list = this.free.get(cap);
    let base = list?.pop();
    if (base) {
      this.idleBytes -= base.byteLength;
      this.touch(cap, list!);
    } else base = new Float32Array(cap);
    this.liveBytes += base.byteLength;
    if (this.liveBytes > this.peakLiveBytes) this.peakLiveBytes = this.liveBytes;
    this.alloc.adopt(this.category, base);
    const view = n === cap ? base : base.subarray(0, n);
    this.bases.set(view, base);
    this.live++;
    return view;
  }

  zeros(n: number): Float32Array {
    const a = this.get(n);
    a.fill(0);
    return a;
  }

  /** An Int32 index buffer of n elements on pooled storage (released with releaseI32). */
  i32(n: number): Int32Array {
    const f = this.get(n);
    const v = new Int32Array(f.buffer, f.byteOffset, n);
    this.i32Bases.set(v, f);
    return v;
  }

  private readonly i32Bases = new WeakMap<Int32Array, Float32Array>();

  /** A Uint16 buffer of n elements (bf16 bits) on pooled storage (released with releaseU16). */
  u16(n: number): Uint16Array {
    const f = this.get(Math.ceil(n / 2));
    const v = new Uint16Array(f.buffer, f.byteOffset, n);
    this.u16Bases.set(v, f);
    return v;
  }

  private readonly u16Bases = new WeakMap<Uint16Array, Float32Array>();

  releaseU16(a: Uint16Array | null | undefined): void {
    if (!a) return;
    const f = this.u16Bases.get(a);
    if (!f) throw new Error('ActivationPool.releaseU16: buffer was not handed out by this pool (or released twice)');
    this.u16Bases.delete(a);
    this.release(f);
  }

  releaseI32(a: Int32Array | null | undefined): void {
    if (!a) return;
    const f = this.i32Bases.get(a);
    if (!f) throw new Error('ActivationPool.releaseI32: buffer was not handed out by this pool (or released twice)');
    this.i32Bases.delete(a);
    this.release(f);
  }

  release(a: Float32Array | null | undefined): void {
    if (!a) return;
    const base = this.bases.get(a);
    if (!base) throw new Error('ActivationPool.release: buffer was not handed out by this pool (or released twice)');
    this.bases.delete(a);
    this.alloc.free(base);
    this.liveBytes -= base.byteLength;
    this.live--;
    let list = this.free.get(base.length);
    if (!list) list = [];
    this.touch(base.length, list);
    list.push(base);
    this.idleBytes += base.byteLength;
    this.evictOver(IDLE_BOUND * this.peakLiveBytes);
  }

  /** Marks a size class most recently used (a Map iterates in insertion order: the front is the LRU class). */
  private touch(cap: number, list: Float32Array[]): void {
    this.free.delete(cap);
    this.free.set(cap, list);
  }

  /** Drops idle buffers, least recently used classes first, until at most `limit` idle bytes remain. */
  private evictOver(limit: number): void {
    for (const [cap, list] of this.free) {
      if (this.idleBytes <= limit) return;
      while (list.length > 0 && this.idleBytes > limit) this.idleBytes -= list.pop()!.byteLength;
      if (list.length === 0) this.free.delete(cap);
    }
  }

  /** Buffers currently handed out (a leak check for tests: 0 after a full forward + backward). */
  get liveCount(): number {
    return this.live;
  }

  get reservedBytes(): number {
    return this.idleBytes;
  }

  /** Drops idle buffers (e.g. after changing batch shapes). */
  trim(): void {
    this.free.clear();
    this.idleBytes = 0;
  }
}
