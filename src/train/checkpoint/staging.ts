// Staging buffers of an async checkpoint. At a checkpoint step the rank copies its state here and trains on while
// the side pool writes the copies; the next checkpoint waits for that write, so one set of buffers serves every
// checkpoint of the run (a fresh large array would be zeroed page by page on first touch, every time). The
// buffers are SharedArrayBuffers: a write task reaches a pool thread (or, under the threads transport, the
// launcher's pool through a BroadcastChannel) without copying them again.

export class StagingArena {
  private buf: Float32Array;
  private at = 0;
  /** Elements the last capture needed in all (sizes the buffer for the next one). */
  private used = 0;
  private inUse = false;

  constructor(initialElements = 0) {
    this.buf = new Float32Array(new SharedArrayBuffer(Math.max(1, initialElements) * 4));
  }

  /** Starts a capture; the previous capture's copies must no longer be needed (its write finished). */
  begin(): void {
    if (this.inUse)
      throw new Error('StagingArena.begin: the previous checkpoint is still staged (wait for its write first)');
    if (this.used > this.buf.length) this.buf = new Float32Array(new SharedArrayBuffer(this.used * 4));
    this.at = 0;
    this.used = 0;
    this.inUse = true;
  }

  /** Copies `src` into the arena; a capture larger than the arena spills into an extra buffer (this time only). */
  copy = (src: Float32Array): Float32Array => {
    if (!this.inUse) throw new Error('StagingArena.copy outside begin()/end()');
    const n = src.length;
    this.used += n;
    let dst: Float32Array;
    if (this.at + n <= this.buf.length) {
      dst = this.buf.subarray(this.at, this.at + n);
      this.at += n;
    } else {
      dst = new Float32Array(new SharedArrayBuffer(Math.max(1, n) * 4)).subarray(0, n);
    }
    dst.set(src);
    return dst;
  };

  /** The staged copies were written: the arena may be reused. */
  end(): void {
    this.inUse = false;
  }

  get bytes(): number {
    return this.buf.byteLength;
  }
}
