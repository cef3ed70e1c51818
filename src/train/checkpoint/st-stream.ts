// Streaming safetensors I/O for checkpoint shards. A rank's shard of a large model is bigger than one JS buffer
// can be (Node 20: 4 GiB per Buffer/Uint8Array — the medium Aurora model already has ≈ 4.3 GB per rank with its
// Adam moments), so the file is never assembled in memory: the header is written, then each tensor's own bytes,
// hashing as we go; reading fills each tensor's array straight from the file, hashing as it reads.
//
// The bytes are exactly those of src/models/safetensors.ts's serializeSafetensors (tensors sorted by name,
// __metadata__ first, header padded with spaces to 8-byte alignment), and the reader applies the same checks
// (known dtype, size = numel·itemsize, tensors tile the data section), so either side can read the other's files.

import { createHash, type Hash } from 'node:crypto';
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { SafetensorsFile, type SafeTensorInput, type SafetensorsData, type SafetensorsDType } from '../../models/safetensors.ts';
import { tempNameFor } from './atomic.ts';
import { CheckpointError } from './format.ts';

const ITEMSIZE: Record<SafetensorsDType, number> = { F32: 4, F64: 8, I32: 4, I64: 8 };
const CHUNK = 64 << 20;
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function dtypeOf(data: SafetensorsData): SafetensorsDType {
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof Float64Array) return 'F64';
  if (data instanceof Int32Array) return 'I32';
  if (data instanceof BigInt64Array) return 'I64';
  throw new Error(`unsupported typed array ${(data as object).constructor?.name}`);
}

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function bytesOf(data: SafetensorsData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export interface WrittenFile {
  bytes: number;
  sha256: string;
}

type TensorsInput = ReadonlyMap<string, SafeTensorInput> | Readonly<Record<string, SafeTensorInput>>;

/** Writes a safetensors file atomically (temp, fsync, rename) without holding it in memory; returns size and SHA-256. */
export function writeSafetensorsStreaming(path: string, tensors: TensorsInput, metadata?: Readonly<Record<string, string>>): WrittenFile {
  if (!LITTLE_ENDIAN_HOST) throw new Error('safetensors: big-endian hosts are not supported');
  const list: [string, SafeTensorInput][] = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors as Record<string, SafeTensorInput>);
  list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  // No prototype: a tensor named "__proto__" must become a key, not replace the object's prototype.
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = { ...metadata };
  let off = 0;
  for (const [name, t] of list) {
    const dtype = t.dtype ?? dtypeOf(t.data);
    if (dtype !== dtypeOf(t.data)) throw new CheckpointError(`${path}: tensor "${name}": dtype ${dtype} does not match its ${t.data.constructor.name}`, path);
    if (numel(t.shape) !== t.data.length) {
      throw new CheckpointError(`${path}: tensor "${name}": shape [${t.shape.join(', ')}] needs ${numel(t.shape)} elements, data has ${t.data.length}`, path);
    }
    header[name] = { dtype, shape: [...t.shape], data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const hbytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8 + hbytes.length);
  prefix.writeBigUInt64LE(BigInt(hbytes.length), 0);
  hbytes.copy(prefix, 8);

  const hash = createHash('sha256');
  const tmp = tempNameFor(path);
  let fd: number | undefined;
  const put = (b: Uint8Array) => {
    for (let at = 0; at < b.length; at += CHUNK) {
      const part = b.subarray(at, Math.min(b.length, at + CHUNK));
      hash.update(part);
      let done = 0;
      while (done < part.length) done += writeSync(fd!, part, done, part.length - done);
    }
  };
  try {
    fd = openSync(tmp, 'wx');
    put(prefix);
    for (const [, t] of list) put(bytesOf(t.data));
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* may not exist */
    }
    throw e instanceof CheckpointError ? e : new CheckpointError(`cannot write ${path}: ${(e as Error).message}`, path);
  }
  return { bytes: prefix.length + off, sha256: hash.digest('hex') };
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
    throw new CheckpointError(`${path} is corrupted: ${msg}; this checkpoint cannot be used — load an older one (--checkpoint.load_step) or delete this step folder`, path);
  };
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new CheckpointError(`${path} is missing (listed in the manifest): ${(e as Error).message}`, path);
  }
  try {
    const size = fstatSync(fd).size;
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
      header = JSON.parse(Buffer.from(hbytes).toString('utf8')) as Record<string, unknown>;
    } catch {
      bad('the header is not valid JSON');
    }
    const dataStart = 8 + n;
    const file = new SafetensorsFile(path, (header.__metadata__ as Record<string, string> | undefined) ?? {});
    const entries = Object.entries(header)
      .filter(([k]) => k !== '__metadata__')
      .map(([name, v]) => {
        const e = v as { dtype: SafetensorsDType; shape: number[]; data_offsets: [number, number] };
        if (!(e && e.dtype in ITEMSIZE && Array.isArray(e.shape) && Array.isArray(e.data_offsets))) bad(`bad header entry for tensor "${name}"`);
        if (e.data_offsets[1] - e.data_offsets[0] !== numel(e.shape) * ITEMSIZE[e.dtype]) bad(`tensor "${name}" has data_offsets that do not match its shape`);
        return { name, ...e };
      })
      .sort((a, b) => a.data_offsets[0] - b.data_offsets[0]);
    let pos = 0;
    for (const e of entries) {
      if (e.data_offsets[0] !== pos) bad(`tensor "${e.name}" does not start where the previous one ended`);
      const count = numel(e.shape);
      const data: SafetensorsData =
        e.dtype === 'F32' ? new Float32Array(count) : e.dtype === 'F64' ? new Float64Array(count) : e.dtype === 'I32' ? new Int32Array(count) : new BigInt64Array(count);
      readFully(fd, bytesOf(data), dataStart + pos, path, hash);
      file.set(e.name, { dtype: e.dtype, shape: e.shape, data });
      pos = e.data_offsets[1];
    }
    if (dataStart + pos !== size) bad(`${size - dataStart - pos} trailing bytes after the last tensor`);
    const sha = hash.digest('hex');
    if (sha !== expected.sha256) bad(`SHA-256 ${sha.slice(0, 16)}… does not match the manifest's ${expected.sha256.slice(0, 16)}…`);
    return file;
  } finally {
    closeSync(fd);
  }
}
