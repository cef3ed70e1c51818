// torchtitan's sample packing (HuggingFaceTextDataset.__iter__): documents are appended, in order, to one running
// token buffer that persists across documents and epochs; whenever it holds ≥ S+1 tokens the first S+1 are cut
// off as one sample (input = chunk[0:S], label = chunk[1:S+1]). Chunks never overlap and nothing is padded or
// shuffled. When the documents run out the source re-loops from document 0 (torchtitan's infinite mode), and the
// leftover buffer carries over into the next epoch.
//
// The position is fully described by (next document index, epoch, leftover buffer): torchtitan checkpoints
// exactly sample_idx + token_buffer, and so do we.

import type { DocumentSource } from './documents.ts';

export interface PackerPosition {
  /** Index (in this rank's documents) of the next document to append. */
  docIndex: number;
  /** Completed passes over this rank's documents. */
  epoch: number;
  /** Tokens appended but not yet emitted, in order. */
  leftover: Int32Array;
}

export class Packer {
  private buf: Int32Array;
  /** buf[off, len) holds the pending tokens. */
  private off = 0;
  private len = 0;
  private docIndex = 0;
  private epoch = 0;

  constructor(
    readonly source: DocumentSource,
    readonly seqLen: number,
    /** Called when the documents run out and reading restarts at document 0 (torchtitan logs a warning). */
    private readonly onReloop?: (epoch: number) => void,
  ) {
    if (!(Number.isInteger(seqLen) && seqLen >= 1))
      throw new RangeError(`seq_len must be a positive integer (got ${seqLen})`);
    this.buf = new Int32Array(Math.max(1024, 2 * (seqLen + 1)));
  }

  /** Writes the next S+1 tokens into `out` (length ≥ S+1) starting at `at`. */
  nextChunkInto(out: Int32Array, at = 0): void {
    const need = this.seqLen + 1;
    while (this.len - this.off < need) this.appendNextDocument();
    out.set(this.buf.subarray(this.off, this.off + need), at);
    this.off += need;
  }

  nextChunk(): Int32Array {
    const out = new Int32Array(this.seqLen + 1);
    this.nextChunkInto(out);
    return out;
  }

  /** The document appended next (before a re-loop wraps it to 0) and the tokens pending before it. */
  get ahead(): { nextDoc: number; pendingTokens: number } {
    return { nextDoc: this.docIndex, pendingTokens: this.len - this.off };
  }

  position(): PackerPosition {
    return { docIndex: this.docIndex, epoch: this.epoch, leftover: this.buf.slice(this.off, this.len) };
  }

  setPosition(p: PackerPosition): void {
    const n = this.source.numDocs;
    if (!(Number.isInteger(p.docIndex) && p.docIndex >= 0 && (p.docIndex <= n || !Number.isFinite(n)))) {
      throw new RangeError(`data position: document index ${p.docIndex} is outside this rank's ${n} documents`);
    }
    if (!(Number.isInteger(p.epoch) && p.epoch >= 0))
      throw new RangeError(`data position: epoch must be an integer ≥ 0 (got ${p.epoch})`);
    this.docIndex = p.docIndex;
    this.epoch = p.epoch;
    this.off = 0;
    this.len = 0;
    this.push(p.leftover);
  }

  private appendNextDocument(): void {
    if (this.docIndex >= this.source.numDocs) {
      this.docIndex = 0;
      this.epoch++;
      this.onReloop?.(this.epoch);
    }
    const doc = this.source.doc(this.docIndex);
    this.docIndex++;
    this.push(doc);
  }

  private push(tokens: Int32Array): void {
    const pending = this.len - this.off;
    if (this.len + tokens.length > this.buf.length) {
      // Compact (drop consumed tokens) and grow if still needed; amortised O(1) per token.
      const cap = Math.max(this.buf.length, 2 * (pending + tokens.length));
      const next = cap === this.buf.length ? this.buf : new Int32Array(cap);
      // TypedArray#set copies through a temporary when source and target share a buffer, so overlap is safe.
      next.set(this.buf.subarray(this.off, this.len), 0);
      this.buf = next;
      this.off = 0;
      this.len = pending;
    }
    this.buf.set(tokens, this.len);
    this.len += tokens.length;
  }
}
