// A pre-tokenized corpus: a header-less little-endian array of token ids, uint16 (`.u16`, `.bin` with
// dtype "u16") or int32 (`.i32`). The file is one token stream that already contains whatever document
// separators its tokenizer put there, so nothing is added around documents.
//
// To stay a map-style dataset (sharding and resume work the same as for text) the stream is cut into fixed
// "pieces" of `pieceTokens` tokens (the last one shorter); a piece is a document. Pieces are read from disk on
// demand, so the file may be far larger than memory. Concatenating a rank's pieces in order gives back its
// contiguous part of the stream exactly, so the piece size changes only the sharding granularity.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { unreadable, type DocumentSource } from './documents.ts';

export type TokenDType = 'u16' | 'i32';
export const DEFAULT_PIECE_TOKENS = 65536;

export class TokenSourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenSourceError';
  }
}

export function tokenDTypeOf(path: string): TokenDType {
  const ext = extname(path).toLowerCase();
  if (ext === '.u16' || ext === '.uint16') return 'u16';
  if (ext === '.i32' || ext === '.int32') return 'i32';
  throw new TokenSourceError(
    `${path}: cannot tell the token dtype from the extension "${ext}"; name the file .u16 (uint16 LE) or .i32 (int32 LE), or pass the dtype explicitly`,
  );
}

export interface TokenSourceOptions {
  dtype?: TokenDType;
  pieceTokens?: number;
  /** Reject ids ≥ vocabSize (the model's vocabulary) with an error naming the file offset. */
  vocabSize?: number;
}

export class TokenFileSource implements DocumentSource {
  readonly dtype: TokenDType;
  readonly numTokens: number;
  readonly numDocs: number;
  readonly pieceTokens: number;
  readonly description: string;
  readonly fingerprint: string;
  private readonly itemSize: number;
  private readonly vocabSize: number | undefined;

  constructor(
    readonly path: string,
    opts: TokenSourceOptions = {},
  ) {
    this.dtype = opts.dtype ?? tokenDTypeOf(path);
    this.itemSize = this.dtype === 'u16' ? 2 : 4;
    this.pieceTokens = opts.pieceTokens ?? DEFAULT_PIECE_TOKENS;
    if (!(Number.isInteger(this.pieceTokens) && this.pieceTokens >= 1))
      throw new TokenSourceError(`pieceTokens must be a positive integer (got ${this.pieceTokens})`);
    this.vocabSize = opts.vocabSize;
    let size: number;
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new TokenSourceError(unreadable('token file', path, e));
    }
    try {
      size = fstatSync(fd).size;
    } finally {
      closeSync(fd);
    }
    if (size % this.itemSize !== 0) {
      throw new TokenSourceError(
        `${path}: ${size} bytes is not a whole number of ${this.dtype} tokens (${this.itemSize} bytes each); wrong dtype or truncated file?`,
      );
    }
    this.numTokens = size / this.itemSize;
    if (this.numTokens === 0) throw new TokenSourceError(`${path}: the token file is empty`);
    this.numDocs = Math.ceil(this.numTokens / this.pieceTokens);
    this.fingerprint = `tokens:${basename(path)}:${this.numTokens} ${this.dtype}:pieces of ${this.pieceTokens}`;
    this.description = `${path} (${this.numTokens} ${this.dtype} tokens in ${this.numDocs} pieces of ${this.pieceTokens})`;
  }

  doc(i: number): Int32Array {
    if (!(Number.isInteger(i) && i >= 0 && i < this.numDocs))
      throw new RangeError(`piece ${i} is outside [0, ${this.numDocs})`);
    const first = i * this.pieceTokens;
    const n = Math.min(this.pieceTokens, this.numTokens - first);
    const bytes = Buffer.alloc(n * this.itemSize);
    const fd = openSync(this.path, 'r');
    try {
      let done = 0;
      while (done < bytes.length) {
        const got = readSync(fd, bytes, done, bytes.length - done, first * this.itemSize + done);
        if (got === 0)
          throw new TokenSourceError(
            `${this.path}: unexpected end of file at byte ${first * this.itemSize + done} (was the file truncated while training?)`,
          );
        done += got;
      }
    } finally {
      closeSync(fd);
    }
    const out = new Int32Array(n);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const V = this.vocabSize;
    for (let k = 0; k < n; k++) {
      const v = this.dtype === 'u16' ? dv.getUint16(2 * k, true) : dv.getInt32(4 * k, true);
      if (v < 0 || (V !== undefined && v >= V)) {
        throw new TokenSourceError(
          `${this.path}: token ${v} at token offset ${first + k} is outside the model vocabulary [0, ${V ?? '2^31'}); the file was made with another tokenizer or the wrong dtype`,
        );
      }
      out[k] = v;
    }
    return out;
  }
}
