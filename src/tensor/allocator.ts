// Tracked allocation of Float32 storage, per rank. Every buffer a rank holds for long is allocated here under a
// category so that "memory per rank" (torchtitan's max_active, by category) is a measured figure, not a guess.
// Buffers are released explicitly: the GC frees memory whenever it likes, but the accounting must follow the
// protocol (a layer's activations are released when its backward consumed them).

export const CATEGORIES = ['params', 'grads', 'optimizer', 'activations', 'comm', 'other'] as const;
export type Category = (typeof CATEGORIES)[number];

export interface MemoryStats {
  live: Record<Category, number>;
  peak: Record<Category, number>;
  liveTotal: number;
  peakTotal: number;
}

function zeroByCategory(): Record<Category, number> {
  return { params: 0, grads: 0, optimizer: 0, activations: 0, comm: 0, other: 0 };
}

export class Allocator {
  private readonly owned = new WeakMap<ArrayBufferLike, Category>();
  private live = zeroByCategory();
  private peak = zeroByCategory();
  private liveTotal = 0;
  private peakTotal = 0;

  /** A zero-filled Float32Array of n elements, counted under `category` until `free`d. */
  f32(category: Category, n: number): Float32Array {
    const a = new Float32Array(n);
    this.track(category, a.buffer, a.byteLength);
    return a;
  }

  /** A zero-filled Float32Array on a SharedArrayBuffer (threads transport: other ranks read it in place). */
  sharedF32(category: Category, n: number): Float32Array {
    const a = new Float32Array(new SharedArrayBuffer(n * 4));
    this.track(category, a.buffer, a.byteLength);
    return a;
  }

  /** Counts an existing buffer (made elsewhere, e.g. loaded from a file) under `category`. */
  adopt(category: Category, a: Float32Array): Float32Array {
    if (a.byteOffset !== 0 || a.byteLength !== a.buffer.byteLength) {
      throw new Error('Allocator.adopt: only whole buffers can be adopted (got a view into a larger buffer)');
    }
    this.track(category, a.buffer, a.byteLength);
    return a;
  }

  free(a: Float32Array | undefined): void {
    if (!a) return;
    const cat = this.owned.get(a.buffer);
    if (cat === undefined) return; // not ours or already freed: freeing twice must not corrupt the counts
    this.owned.delete(a.buffer);
    this.live[cat] -= a.buffer.byteLength;
    this.liveTotal -= a.buffer.byteLength;
  }

  stats(): MemoryStats {
    return { live: { ...this.live }, peak: { ...this.peak }, liveTotal: this.liveTotal, peakTotal: this.peakTotal };
  }

  /** torchtitan resets the peaks after each log; so do we. */
  resetPeak(): void {
    this.peak = { ...this.live };
    this.peakTotal = this.liveTotal;
  }

  private track(category: Category, buf: ArrayBufferLike, bytes: number): void {
    this.owned.set(buf, category);
    this.live[category] += bytes;
    this.liveTotal += bytes;
    if (this.live[category] > this.peak[category]) this.peak[category] = this.live[category];
    if (this.liveTotal > this.peakTotal) this.peakTotal = this.liveTotal;
  }
}
