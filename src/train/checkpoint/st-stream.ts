// Streaming safetensors I/O for checkpoint shards. A rank's shard of a large model is bigger than one JS buffer
// can be (Node 20: 4 GiB per Buffer/Uint8Array — the medium Aurora model already has ≈ 4.3 GB per rank with its
// Adam moments), so the file is never assembled in memory: the header is written, then each tensor's own bytes,
// hashing as we go; reading fills each tensor's array straight from the file, hashing as it reads.
//
// The bytes are exactly those of src/models/safetensors.ts's serializeSafetensors (tensors sorted by name,
// __metadata__ first, header padded with spaces to 8-byte alignment), and the reader applies the same checks
// (known dtype, size = numel·itemsize, tensors tile the data section), so either side can read the other's files.

import { createHash, type Hash } from 'node:crypto';
import { closeSync, readSync } from 'node:fs';
import { writeAll, writeAtomically } from '../../models/atomic-write.ts';
import {
  ITEMSIZE,
  numel,
  safetensorsLayout,
  SafetensorsError,
  SafetensorsFile,
  tensorBytes,
  type SafetensorsData,
  type SafetensorsDType,
  type TensorsInput,
} from '../../models/safetensors.ts';
import { CheckpointError } from './format.ts';
import { openConfined } from './confine.ts';

const CHUNK = 64 << 20;

export interface WrittenFile {
  bytes: number;
  sha256: string;
}

/** Writes a safetensors file atomically (temp, fsync, rename) without holding it in memory; returns size and SHA-256. */
export function writeSafetensorsStreaming(
  path: string,
  tensors: TensorsInput,
  metadata?: Readonly<Record<string, string>>,
): WrittenFile {
  let layout;
  try {
    layout = safetensorsLayout(tensors, metadata, path);
  } catch (e) {
    throw e instanceof SafetensorsError ? new CheckpointError(e.message, path) : e;
  }
  const { head, tensors: list, dataBytes } = layout;
  const hash = createHash('sha256');
  const put = (fd: number, b: Uint8Array) => {
    for (let at = 0; at < b.length; at += CHUNK) {
      const part = b.subarray(at, Math.min(b.length, at + CHUNK));
      hash.update(part);
      writeAll(fd, part);
    }
  };
  try {
    writeAtomically(path, (fd) => {
      put(fd, head);
      for (const [, t] of list) put(fd, tensorBytes(t.data));
    });
  } catch (e) {
    throw e instanceof CheckpointError ? e : new CheckpointError(`cannot write ${path}: ${(e as Error).message}`, path);
  }
  return { bytes: head.length + dataBytes, sha256: hash.digest('hex') };
}

function readFully(fd: number, into: Uint8Array, position: number, path: string, hash: Hash): void {
  for (let at = 0; at < into.length; ) {
    const n = readSync(fd, into, at, Math.min(CHUNK, into.length - at), position + at);
    if (n === 0) throw new CheckpointError(`${path} is truncated: it ends at byte ${position + at}`, path);
    at += n;
  }
  hash.update(into);
}

/**
 * Reads a safetensors file tensor by tensor, checking it against the manifest's size and SHA-256. Any mismatch
 * or malformed header is a CheckpointError naming the file.
 */
export function readSafetensorsVerified(path: string, expected: WrittenFile): SafetensorsFile {
  const bad = (msg: string): never => {
    throw new CheckpointError(
      `${path} is corrupted: ${msg}; this checkpoint cannot be used — load an older one (--checkpoint.load_step) or delete this step folder`,
      path,
    );
  };
  let fd: number;
  let size: number;
  try {
    ({ fd, size } = openConfined(path));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || /ENOENT/.test((e as Error).message))
      throw new CheckpointError(`${path} is missing (listed in the manifest): ${(e as Error).message}`, path);
    throw e;
  }
  try {
    if (size !== expected.bytes) bad(`${size} bytes, the manifest lists ${expected.bytes}`);
    const hash = createHash('sha256');
    const lenBytes = new Uint8Array(8);
    if (size < 8) bad('shorter than the 8-byte header length');
    readFully(fd, lenBytes, 0, path, hash);
    const n = Number(Buffer.from(lenBytes).readBigUInt64LE(0));
    if (!(n <= size - 8 && n <= 100_000_000)) bad(`header length ${n} does not fit the file`);
    const hbytes = new Uint8Array(n);
    readFully(fd, hbytes, 8, path, hash);
    let header: Record<string, unknown> = {};
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(hbytes)) as Record<string, unknown>;
    } catch {
      bad('the header is not valid JSON');
    }
    if (header === null || typeof header !== 'object' || Array.isArray(header)) bad('the header is not a JSON object');
    const dataStart = 8 + n;
    const meta = header.__metadata__ ?? {};
    if (
      meta === null ||
      typeof meta !== 'object' ||
      Array.isArray(meta) ||
      !Object.values(meta).every((v) => typeof v === 'string')
    )
      bad('__metadata__ is not an object of strings');
    const file = new SafetensorsFile(path, meta as Record<string, string>);
    const dim = (d: unknown) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0;
    const entries = Object.entries(header)
      .filter(([k]) => k !== '__metadata__')
      .map(([name, v]) => {
        const e = v as { dtype: SafetensorsDType; shape: number[]; data_offsets: [number, number] };
        if (
          !(
            e &&
            typeof e === 'object' &&
            typeof e.dtype === 'string' &&
            Object.hasOwn(ITEMSIZE, e.dtype) &&
            Array.isArray(e.shape) &&
            Array.isArray(e.data_offsets)
          )
        )
          bad(`bad header entry for tensor "${name}"`);
        if (!e.shape.every(dim) || e.data_offsets.length !== 2 || !e.data_offsets.every(dim))
          bad(`tensor "${name}" has a shape or data_offsets that are not non-negative integers`);
        if (e.data_offsets[1] - e.data_offsets[0] !== numel(e.shape) * ITEMSIZE[e.dtype])
          bad(`tensor "${name}" has data_offsets that do not match its shape`);
        // Checked before its array is allocated: a header must not make the reader allocate more than the file holds.
        if (dataStart + e.data_offsets[1] > size)
          bad(`tensor "${name}" ends at byte ${dataStart + e.data_offsets[1]}, past the end of the file (${size})`);
        return { name, ...e };
      })
      // By start, then end: an empty tensor shares its start with the next one and must come first. JSON.parse
      // puts integer-like names ("0") before all others, so the header's own order is not the file's.
      .sort((a, b) => a.data_offsets[0] - b.data_offsets[0] || a.data_offsets[1] - b.data_offsets[1]);
    let pos = 0;
    for (const e of entries) {
      if (e.data_offsets[0] !== pos) bad(`tensor "${e.name}" does not start where the previous one ended`);
      const count = numel(e.shape);
      const data: SafetensorsData =
        e.dtype === 'F32'
          ? new Float32Array(count)
          : e.dtype === 'F64'
            ? new Float64Array(count)
            : e.dtype === 'I32'
              ? new Int32Array(count)
              : new BigInt64Array(count);
      readFully(fd, tensorBytes(data), dataStart + pos, path, hash);
      file.set(e.name, { dtype: e.dtype, shape: e.shape, data });
      pos = e.data_offsets[1];
    }
    if (dataStart + pos !== size) bad(`${size - dataStart - pos} trailing bytes after the last tensor`);
    const sha = hash.digest('hex');
    if (sha !== expected.sha256)
      bad(`SHA-256 ${sha.slice(0, 16)}… does not match the manifest's ${expected.sha256.slice(0, 16)}…`);
    return file;
  } finally {
    closeSync(fd);
  }
}
