// Reading and writing the safetensors format (https://huggingface.co/docs/safetensors), the weight / fixture /
// checkpoint exchange format shared with PyTorch.
//
// Layout: 8-byte little-endian u64 N | N bytes of UTF-8 JSON header | data section.
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end]} (byte offsets relative to the start of
// the data section) and may hold "__metadata__": {string: string}. As in the reference Rust implementation, the
// tensors must tile the data section exactly: sorted by offset, each one starts where the previous ended, and the last
// one ends at the end of the file. Writers pad the header with spaces so the data section is 8-byte aligned.
//
// Supported dtypes: F32, F64, I32, I64 (little-endian). Other safetensors dtypes (F16, BF16, I8, …) are rejected with
// an "unsupported dtype" error naming the tensor; anything else is an "unknown dtype".
//
// Every error message starts with the file path (or "<buffer>") and names the tensor involved.

import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { writeAll, writeAtomically } from './atomic-write.ts';

export type SafetensorsDType = 'F32' | 'F64' | 'I32' | 'I64';
export type SafetensorsData = Float32Array | Float64Array | Int32Array | BigInt64Array;

export interface SafeTensor {
  dtype: SafetensorsDType;
  shape: number[];
  /** Owned, aligned copy of the tensor's bytes (row-major). */
  data: SafetensorsData;
}

/** What writeSafetensors accepts per tensor; dtype defaults to the one implied by the typed array. */
export interface SafeTensorInput {
  dtype?: SafetensorsDType;
  shape: readonly number[];
  data: SafetensorsData;
}

/** The tensors of one file by name (in data-offset order), plus the file's path and its `__metadata__`. */
export class SafetensorsFile extends Map<string, SafeTensor> {
  constructor(
    readonly path: string,
    readonly metadata: Record<string, string>,
  ) {
    super();
  }
}

export class SafetensorsError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
    this.name = 'SafetensorsError';
  }
}

export const ITEMSIZE: Record<SafetensorsDType, number> = { F32: 4, F64: 8, I32: 4, I64: 8 };
const KNOWN_UNSUPPORTED = new Set([
  'BOOL',
  'U8',
  'I8',
  'U16',
  'I16',
  'F16',
  'BF16',
  'U32',
  'U64',
  'F8_E4M3',
  'F8_E5M2',
  'F8_E8M0',
  'F6_E2M3',
  'F6_E3M2',
  'F4',
  'C64',
]);
/** Refuse absurd header lengths before allocating (the Rust implementation uses the same 100 MB limit). */
const MAX_HEADER_BYTES = 100_000_000;

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function dtypeOf(data: SafetensorsData): SafetensorsDType {
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof Float64Array) return 'F64';
  if (data instanceof Int32Array) return 'I32';
  if (data instanceof BigInt64Array) return 'I64';
  throw new Error(`unsupported typed array ${(data as object).constructor?.name}`);
}

function typedFromBytes(dtype: SafetensorsDType, bytes: Uint8Array): SafetensorsData {
  if (!LITTLE_ENDIAN_HOST) throw new Error('safetensors: big-endian hosts are not supported');
  // Copy into a fresh, 0-aligned ArrayBuffer (offsets in the file need not be aligned). Not bytes.slice(): on a
  // Node Buffer that is a view into the shared pool, not a copy.
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  const buf = copy.buffer;
  switch (dtype) {
    case 'F32':
      return new Float32Array(buf);
    case 'F64':
      return new Float64Array(buf);
    case 'I32':
      return new Int32Array(buf);
    case 'I64':
      return new BigInt64Array(buf);
  }
}

/** Parse a whole safetensors image. `path` is used only in error messages. */
export function parseSafetensors(bytes: Uint8Array, path = '<buffer>'): SafetensorsFile {
  const fail = (msg: string): never => {
    throw new SafetensorsError(path, msg);
  };
  if (bytes.length < 8) fail(`truncated file: ${bytes.length} bytes, shorter than the 8-byte header length`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES))
    fail(`bad header: header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(n64);
  if (8 + n > bytes.length) {
    fail(`truncated file: header length ${n} needs ${8 + n} bytes, file has ${bytes.length}`);
  }
  let headerText: string;
  try {
    headerText = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    return fail('bad header: not valid UTF-8');
  }
  if (!headerText.startsWith('{'))
    fail(`bad header: JSON header must start with '{' (got ${JSON.stringify(headerText.slice(0, 20))})`);
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (e) {
    return fail(`bad header: invalid JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header))
    fail('bad header: JSON header is not an object');

  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;
  let metadata: Record<string, string> = {};
  const entries: { name: string; dtype: SafetensorsDType; shape: number[]; begin: number; end: number }[] = [];

  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
        fail('bad header: __metadata__ is not an object');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`bad header: __metadata__.${k} is not a string`);
      }
      metadata = { ...(raw as Record<string, string>) };
      continue;
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
      fail(`bad header: entry for tensor "${name}" is not an object`);
    const info = raw as Record<string, unknown>;
    const dtype = info.dtype;
    if (typeof dtype !== 'string') fail(`bad header: tensor "${name}" has no dtype string`);
    if (!((dtype as string) in ITEMSIZE)) {
      if (KNOWN_UNSUPPORTED.has(dtype as string))
        fail(`unsupported dtype ${dtype} for tensor "${name}" (supported: F32, F64, I32, I64)`);
      fail(`unknown dtype ${JSON.stringify(dtype)} for tensor "${name}"`);
    }
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`bad header: tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    }
    const offs = info.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(`bad header: tensor "${name}" has invalid data_offsets ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as number[];
    const dt = dtype as SafetensorsDType;
    if (end < begin) fail(`bad header: tensor "${name}" has data_offsets [${begin}, ${end}] with end < begin`);
    if (end > dataLen) {
      fail(
        `offsets out of range: tensor "${name}" data_offsets [${begin}, ${end}] exceed the ${dataLen}-byte data section (truncated file?)`,
      );
    }
    const want = numel(shape as number[]) * ITEMSIZE[dt];
    if (end - begin !== want) {
      fail(
        `bad header: tensor "${name}" (${dt} ${fmtShape(shape as number[])}) needs ${want} bytes, data_offsets [${begin}, ${end}] span ${end - begin}`,
      );
    }
    entries.push({ name, dtype: dt, shape: shape as number[], begin, end });
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const e of entries) {
    if (e.begin < pos)
      fail(
        `bad header: tensor "${e.name}" data_offsets [${e.begin}, ${e.end}] overlap the previous tensor (ends at ${pos})`,
      );
    if (e.begin > pos)
      fail(
        `bad header: gap in the data section before tensor "${e.name}" (bytes ${pos}..${e.begin} belong to no tensor)`,
      );
    pos = e.end;
  }
  if (pos !== dataLen)
    fail(`bad header: tensors cover ${pos} bytes of the data section but it holds ${dataLen} (trailing bytes)`);

  const file = new SafetensorsFile(path, metadata);
  for (const e of entries) {
    file.set(e.name, {
      dtype: e.dtype,
      shape: e.shape,
      data: typedFromBytes(e.dtype, bytes.subarray(dataStart + e.begin, dataStart + e.end)),
    });
  }
  return file;
}

/** Read a safetensors file synchronously. */
export function readSafetensors(path: string): SafetensorsFile {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new SafetensorsError(path, `cannot read file (${(e as Error).message})`);
  }
  return parseSafetensors(bytes, path);
}

export async function readSafetensorsAsync(path: string): Promise<SafetensorsFile> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new SafetensorsError(path, `cannot read file (${(e as Error).message})`);
  }
  return parseSafetensors(bytes, path);
}

export type TensorsInput = ReadonlyMap<string, SafeTensorInput> | Readonly<Record<string, SafeTensorInput>>;

/** A safetensors file before its data: the 8-byte length + padded JSON header, and the tensors in file order. */
export interface SafetensorsLayout {
  /** u64 header length, then the UTF-8 JSON header padded with spaces so the data section is 8-byte aligned. */
  head: Uint8Array;
  /** Tensors sorted by name: the order of their bytes in the data section. */
  tensors: [string, SafeTensorInput][];
  dataBytes: number;
}

/**
 * Lays out tensors (sorted by name) as a safetensors file. Metadata values must be strings. Throws a
 * SafetensorsError if a tensor's data length does not match its shape, or its dtype does not match the typed array.
 */
export function safetensorsLayout(
  tensors: TensorsInput,
  metadata?: Readonly<Record<string, string>>,
  path = '<buffer>',
): SafetensorsLayout {
  if (!LITTLE_ENDIAN_HOST) throw new Error('safetensors: big-endian hosts are not supported');
  const list: [string, SafeTensorInput][] =
    tensors instanceof Map
      ? [...(tensors as ReadonlyMap<string, SafeTensorInput>).entries()]
      : Object.entries(tensors as Record<string, SafeTensorInput>);
  list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  // No prototype: a tensor named "__proto__" must become a key, not replace the object's prototype.
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError(path, `metadata value for "${k}" is not a string`);
    }
    header.__metadata__ = { ...metadata };
  }
  let off = 0;
  for (const [name, t] of list) {
    if (name === '__metadata__') throw new SafetensorsError(path, 'a tensor may not be named "__metadata__"');
    const actual = dtypeOf(t.data);
    const dtype = t.dtype ?? actual;
    if (dtype !== actual)
      throw new SafetensorsError(
        path,
        `tensor "${name}": dtype ${dtype} does not match its ${t.data.constructor.name}`,
      );
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new SafetensorsError(path, `tensor "${name}": invalid shape ${fmtShape(t.shape)}`);
    if (numel(t.shape) !== t.data.length) {
      throw new SafetensorsError(
        path,
        `tensor "${name}": shape ${fmtShape(t.shape)} needs ${numel(t.shape)} elements, data has ${t.data.length}`,
      );
    }
    const nbytes = t.data.byteLength;
    header[name] = { dtype, shape: [...t.shape], data_offsets: [off, off + nbytes] };
    off += nbytes;
  }
  let json = JSON.stringify(header);
  let hbytes = new TextEncoder().encode(json);
  const pad = (8 - (hbytes.length % 8)) % 8;
  if (pad) {
    json += ' '.repeat(pad);
    hbytes = new TextEncoder().encode(json);
  }
  const head = new Uint8Array(8 + hbytes.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(hbytes.length), true);
  head.set(hbytes, 8);
  return { head, tensors: list, dataBytes: off };
}

/** The bytes of a tensor's data, in place (little-endian host). */
export function tensorBytes(data: SafetensorsData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Serialize tensors (written sorted by name) into a safetensors image; the checks are safetensorsLayout's. */
export function serializeSafetensors(
  tensors: TensorsInput,
  metadata?: Readonly<Record<string, string>>,
  path = '<buffer>',
): Uint8Array {
  const { head, tensors: list, dataBytes } = safetensorsLayout(tensors, metadata, path);
  const out = new Uint8Array(head.length + dataBytes);
  out.set(head, 0);
  let pos = head.length;
  for (const [, t] of list) {
    out.set(tensorBytes(t.data), pos);
    pos += t.data.byteLength;
  }
  return out;
}

/** Write a safetensors file atomically: a temp file in the same directory, fsync, then rename over `path`. */
export function writeSafetensors(
  path: string,
  tensors: TensorsInput,
  metadata?: Readonly<Record<string, string>>,
): void {
  const bytes = serializeSafetensors(tensors, metadata, path);
  try {
    writeAtomically(path, (fd) => writeAll(fd, bytes));
  } catch (e) {
    throw new SafetensorsError(path, `cannot write file (${(e as Error).message})`);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Checked getters. `expectedShape` undefined skips the shape check.

function getChecked(
  file: SafetensorsFile,
  name: string,
  dtype: SafetensorsDType,
  expectedShape: readonly number[] | undefined,
  accept?: SafetensorsDType[],
): SafeTensor {
  const t = file.get(name);
  if (!t) {
    throw new SafetensorsError(
      file.path,
      `missing tensor "${name}" (expected ${dtype}${expectedShape ? ' ' + fmtShape(expectedShape) : ''})`,
    );
  }
  const okDtype = accept ? accept.includes(t.dtype) : t.dtype === dtype;
  const okShape =
    !expectedShape || (expectedShape.length === t.shape.length && expectedShape.every((d, i) => d === t.shape[i]));
  if (!okDtype || !okShape) {
    const exp = `${accept ? accept.join('|') : dtype}${expectedShape ? ' ' + fmtShape(expectedShape) : ''}`;
    throw new SafetensorsError(file.path, `tensor "${name}": expected ${exp}, got ${t.dtype} ${fmtShape(t.shape)}`);
  }
  return t;
}

export function getF32(file: SafetensorsFile, name: string, expectedShape?: readonly number[]): Float32Array {
  return getChecked(file, name, 'F32', expectedShape).data as Float32Array;
}

export function getF64(file: SafetensorsFile, name: string, expectedShape?: readonly number[]): Float64Array {
  return getChecked(file, name, 'F64', expectedShape).data as Float64Array;
}

export function getI32(file: SafetensorsFile, name: string, expectedShape?: readonly number[]): Int32Array {
  return getChecked(file, name, 'I32', expectedShape).data as Int32Array;
}

export function getI64(file: SafetensorsFile, name: string, expectedShape?: readonly number[]): BigInt64Array {
  return getChecked(file, name, 'I64', expectedShape).data as BigInt64Array;
}

/** An I64 or I32 tensor as Int32Array; throws naming the tensor and element if an I64 value is outside int32. */
export function getInt32(file: SafetensorsFile, name: string, expectedShape?: readonly number[]): Int32Array {
  const t = getChecked(file, name, 'I64', expectedShape, ['I64', 'I32']);
  if (t.data instanceof Int32Array) return t.data;
  return int64ToInt32(t.data as BigInt64Array, `${file.path}: tensor "${name}"`);
}

export function int64ToInt32(src: BigInt64Array, what = 'int64 tensor'): Int32Array {
  const out = new Int32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    if (v < -2147483648n || v > 2147483647n) throw new RangeError(`${what}: element ${i} = ${v} does not fit in int32`);
    out[i] = Number(v);
  }
  return out;
}

/** A 0-d (or single-element) F32 tensor as a number. */
export function getScalarF32(file: SafetensorsFile, name: string): number {
  const t = getChecked(file, name, 'F32', undefined);
  if (t.data.length !== 1)
    throw new SafetensorsError(file.path, `tensor "${name}": expected a scalar, got F32 ${fmtShape(t.shape)}`);
  return (t.data as Float32Array)[0]!;
}
