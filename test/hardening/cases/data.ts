// Datasets that cannot be what they claim (binary or invalid UTF-8 "text"), and the launcher's checks of a
// dataset path; then safetensors files whose bytes pass the manifest's size and hash but whose structure is bad.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadJobConfig } from '../../../src/train/job-config.ts';
import { datasetPathProblem, loadTextSource } from '../../../src/train/data/index.ts';
import { readSafetensorsVerified } from '../../../src/train/checkpoint/st-stream.ts';
import { attempt, safetensorsBytes, sha256, type Case, type Sandbox } from '../harness.ts';

function dataset(sb: Sandbox, name: string, bytes: Uint8Array | string, kind = 'text') {
  const p = join(sb.run, name);
  writeFileSync(p, bytes);
  return attempt(() => {
    const problem = datasetPathProblem(loadJobConfig(null, ['--training.dataset', kind, '--training.dataset_path', p]));
    if (problem) throw new Error(problem);
    if (kind === 'text') loadTextSource(p);
    return 'usable';
  });
}

const d = (
  name: string,
  file: string,
  bytes: Uint8Array | string,
  exit: number,
  words: RegExp[],
  kind = 'text',
): Case => ({ kind: 'data', name, exit, words, run: (sb) => dataset(sb, file, bytes, kind) });
const big = (at: number, byte: number) => {
  const b = Buffer.alloc(200_000, 'a');
  b[at] = byte;
  return b;
};

export const dataCases: Case[] = [
  d('a binary file as a text dataset', 'tokens.txt', Uint8Array.from([1, 0, 2, 0, 3, 0]), 1, [
    /tokens\.txt is binary \(a NUL byte at offset 1\), not text/,
    /dataset = "tokens"/,
  ]),
  d('Latin-1 text', 'latin1.txt', Uint8Array.from([0x63, 0x61, 0x66, 0xe9, 0x0a]), 1, [
    /latin1\.txt is not valid UTF-8 text/,
    /iconv/,
  ]),
  d('a NUL byte past the first 64 KiB (found by the full read)', 'late-nul.txt', big(150_000, 0), 1, [
    /is binary \(a NUL byte at offset 150000\)/,
  ]),
  d('invalid UTF-8 past the first 64 KiB', 'late-bad.txt', big(150_000, 0xff), 1, [/is not valid UTF-8 text/]),
  d(
    'a UTF-8 character cut by the 64 KiB sample is fine',
    'cut.txt',
    Buffer.concat([Buffer.alloc(65_535, 'a'), Buffer.from('é and more text\n')]),
    0,
    [/^usable$/],
  ),
  d('a gzip file as jsonl', 'c4.jsonl', Uint8Array.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0]), 1, [/is binary/]),
  d('valid UTF-8 text', 'ok.txt', 'Ein schöner Tag. 你好\n\nSecond paragraph.\n', 0, [/^usable$/]),
  d('an empty text file', 'empty.txt', '', 1, [/no documents found/]),
  d('binary tokens are not checked as text', 'toks.u16', Uint8Array.from([1, 0, 2, 0]), 0, [/^usable$/], 'tokens'),
  {
    kind: 'data',
    name: 'a folder as a token dataset',
    exit: 1,
    words: [/is not a file \(set \[training\] dataset_path to a \.u16 or \.i32 file/],
    run: (sb) => (
      mkdirSync(join(sb.run, 'dir.u16')),
      attempt(() => {
        const p = datasetPathProblem(
          loadJobConfig(null, ['--training.dataset', 'tokens', '--training.dataset_path', join(sb.run, 'dir.u16')]),
        );
        if (p) throw new Error(p);
      })
    ),
  },
  {
    kind: 'data',
    name: 'a dataset that does not exist',
    exit: 1,
    words: [/cannot read dataset .*nope\.txt/],
    run: (sb) =>
      attempt(() => {
        const p = datasetPathProblem(
          loadJobConfig(null, ['--training.dataset', 'text', '--training.dataset_path', join(sb.run, 'nope.txt')]),
        );
        if (p) throw new Error(p);
      }),
  },
];

// ---- tensors ----

/** Reads crafted safetensors bytes with the reader the checkpoint uses (size and hash vouched for). */
function tensor(sb: Sandbox, bytes: Uint8Array) {
  const p = join(sb.run, 't.safetensors');
  writeFileSync(p, bytes);
  return attempt(() => {
    const f = readSafetensorsVerified(p, { bytes: bytes.length, sha256: sha256(bytes) });
    return [...f.keys()].join(',');
  });
}

const t = (name: string, bytes: () => Uint8Array, exit: number, words: RegExp[]): Case => ({
  kind: 'tensor',
  name,
  exit,
  words,
  run: (sb) => tensor(sb, bytes()),
});
const f32 = (n: number) => new Uint8Array(new Float32Array(n).fill(1).buffer);
const lenPrefix = (len: bigint, rest: Uint8Array = new Uint8Array(0)) => {
  const b = new Uint8Array(8 + rest.length);
  new DataView(b.buffer).setBigUint64(0, len, true);
  b.set(rest, 8);
  return b;
};

export const tensorCases: Case[] = [
  t(
    'a valid file (control)',
    () => safetensorsBytes({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, f32(2)),
    0,
    [/^a$/],
  ),
  t('shorter than the length prefix', () => Uint8Array.of(1, 2, 3), 1, [/shorter than the 8-byte header length/]),
  t('a header length past the end', () => lenPrefix(1000n, new Uint8Array(16)), 1, [
    /header length 1000 does not fit the file/,
  ]),
  t('a header length of 2^63', () => lenPrefix(1n << 63n, new Uint8Array(16)), 1, [/does not fit the file/]),
  t(
    'a header that is not JSON',
    () => safetensorsBytes(null, new Uint8Array(0), new TextEncoder().encode('{"a": nope  ')),
    1,
    [/the header is not valid JSON/],
  ),
  t(
    'a header that is not UTF-8',
    () => safetensorsBytes(null, new Uint8Array(0), Uint8Array.of(0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d, 0x20)),
    1,
    [/not valid JSON/],
  ),
  t('a header that is a JSON list', () => safetensorsBytes([1, 2]), 1, [/the header is not a JSON object/]),
  t(
    'a dtype named after an Object property',
    () => safetensorsBytes({ a: { dtype: 'constructor', shape: [0], data_offsets: [0, 0] } }),
    1,
    [/bad header entry for tensor "a"/],
  ),
  t(
    'an unsupported dtype',
    () => safetensorsBytes({ a: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2)),
    1,
    [/bad header entry/],
  ),
  t('a negative dimension', () => safetensorsBytes({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 0] } }), 1, [
    /not non-negative integers/,
  ]),
  t(
    'a fractional dimension',
    () => safetensorsBytes({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 6] } }, new Uint8Array(6)),
    1,
    [/not non-negative integers/],
  ),
  t(
    'a shape of 2^40 elements in a small file (must not allocate)',
    () => safetensorsBytes({ a: { dtype: 'F32', shape: [2 ** 40], data_offsets: [0, 2 ** 42] } }, f32(2)),
    1,
    [/past the end of the file/],
  ),
  t(
    'data_offsets that do not match the shape',
    () => safetensorsBytes({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, f32(1)),
    1,
    [/data_offsets that do not match its shape/],
  ),
  t(
    'three data_offsets',
    () => safetensorsBytes({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4, 8] } }, f32(2)),
    1,
    [/not non-negative integers/],
  ),
  t(
    'a gap between tensors',
    () =>
      safetensorsBytes(
        {
          a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
          b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
        },
        f32(3),
      ),
    1,
    [/tensor "b" does not start where the previous one ended/],
  ),
  t(
    'overlapping tensors',
    () =>
      safetensorsBytes(
        {
          a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
          b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
        },
        f32(2),
      ),
    1,
    [/does not start where the previous one ended/],
  ),
  t('trailing bytes', () => safetensorsBytes({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32(2)), 1, [
    /4 trailing bytes after the last tensor/,
  ]),
  t(
    '__metadata__ with a number value',
    () => safetensorsBytes({ __metadata__: { k: 1 }, a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32(1)),
    1,
    [/__metadata__ is not an object of strings/],
  ),
  t('a tensor entry that is a string', () => safetensorsBytes({ a: 'F32' }), 1, [/bad header entry for tensor "a"/]),
];
