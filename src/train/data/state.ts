// The data loader's resumable state: a plain JSON object (it goes into the checkpoint's rank<r>.json).
// A resumed loader continues bit-identically: same next document, same leftover tokens, same epoch.

import type { PackerPosition } from './packer.ts';

export const DATA_STATE_FORMAT = 'moe-actors/data-state@1';

export interface DataState {
  format: typeof DATA_STATE_FORMAT;
  /** Identifies the dataset (file name and size, or synthetic seed and vocab); must match on resume. */
  fingerprint: string;
  dpRank: number;
  dpDegree: number;
  seqLen: number;
  batchSize: number;
  /** Next document to append, in this rank's documents (0-based). */
  docIndex: number;
  epoch: number;
  /** Leftover buffer: int32 little-endian token ids, base64. */
  buffer: string;
  bufferTokens: number;
  /** Batches served so far on this rank. */
  batches: number;
  /** Σ labels.numel() over the batches served (torchtitan's n_tokens_seen, per rank). */
  tokens: number;
}

export class DataStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DataStateError';
  }
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function encodeTokens(t: Int32Array): string {
  if (!LITTLE_ENDIAN_HOST) throw new Error('data state: big-endian hosts are not supported');
  return Buffer.from(t.buffer, t.byteOffset, t.byteLength).toString('base64');
}

export function decodeTokens(b64: string, count: number): Int32Array {
  const bytes = Buffer.from(b64, 'base64');
  if (bytes.length !== count * 4)
    throw new DataStateError(
      `data state: buffer holds ${bytes.length} bytes, expected ${count} int32 tokens (${count * 4} bytes)`,
    );
  const out = new Int32Array(count);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

export function positionOf(s: DataState): PackerPosition {
  return { docIndex: s.docIndex, epoch: s.epoch, leftover: decodeTokens(s.buffer, s.bufferTokens) };
}

/** Checks the shape of a state read from JSON; names the first bad field. */
export function checkDataState(v: unknown): DataState {
  const fail = (msg: string): never => {
    throw new DataStateError(`data state: ${msg}`);
  };
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('expected an object');
  const s = v as Record<string, unknown>;
  if (s.format !== DATA_STATE_FORMAT)
    fail(`unknown format ${JSON.stringify(s.format)} (expected "${DATA_STATE_FORMAT}")`);
  for (const k of [
    'dpRank',
    'dpDegree',
    'seqLen',
    'batchSize',
    'docIndex',
    'epoch',
    'bufferTokens',
    'batches',
    'tokens',
  ] as const) {
    if (!Number.isSafeInteger(s[k]) || (s[k] as number) < 0)
      fail(`${k} must be an integer ≥ 0 (got ${JSON.stringify(s[k])})`);
  }
  for (const k of ['fingerprint', 'buffer'] as const) if (typeof s[k] !== 'string') fail(`${k} must be a string`);
  return s as unknown as DataState;
}
