// Checkpoint shards are written and read by a streaming safetensors codec (files may exceed one JS buffer); its
// bytes must be exactly those of the models layer's serializer, so either side reads the other's files.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSafetensors, serializeSafetensors, type SafeTensorInput } from '../../src/models/safetensors.ts';
import { readSafetensorsVerified, writeSafetensorsStreaming } from '../../src/train/checkpoint/st-stream.ts';

const dir = mkdtempSync(join(tmpdir(), 'moe-st-'));
let k = 0;

const tensorArb = fc.oneof(
  fc
    .array(fc.float({ noNaN: true }), { maxLength: 20 })
    .map((a): SafeTensorInput => ({ shape: [a.length], data: Float32Array.from(a) })),
  fc
    .array(fc.integer(), { maxLength: 12 })
    .map((a): SafeTensorInput => ({ shape: [a.length, 1], data: Int32Array.from(a) })),
  fc
    .array(fc.double({ noNaN: true }), { maxLength: 6 })
    .map((a): SafeTensorInput => ({ shape: [a.length], data: Float64Array.from(a) })),
  fc
    .array(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), { maxLength: 5 })
    .map((a): SafeTensorInput => ({ shape: [a.length], data: BigInt64Array.from(a) })),
);

describe('streaming safetensors codec', () => {
  it('writes the same bytes as serializeSafetensors and reads back what parseSafetensors reads', () => {
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.string({ minLength: 1, maxLength: 12 }).filter((s) => s !== '__metadata__' && s !== '__proto__'),
          tensorArb,
          { maxKeys: 6 },
        ),
        fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }),
        (tensors, meta) => {
          const p = join(dir, `t${k++}.safetensors`);
          const w = writeSafetensorsStreaming(p, tensors, meta);
          const disk = readFileSync(p);
          expect(Buffer.compare(disk, Buffer.from(serializeSafetensors(tensors, meta)))).toBe(0);
          expect(w).toEqual({ bytes: disk.length, sha256: createHash('sha256').update(disk).digest('hex') });
          const mine = readSafetensorsVerified(p, w);
          const theirs = parseSafetensors(disk, p);
          expect(mine.metadata).toEqual(theirs.metadata);
          expect([...mine.keys()]).toEqual([...theirs.keys()]);
          for (const [name, t] of theirs) expect(mine.get(name)).toEqual(t);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('reads an empty tensor that sorts before an integer-like name (CI counterexample)', () => {
    // JSON.parse lists "0" before " " although " " (empty, offsets [0, 0]) comes first in the data section.
    const p = join(dir, 'empty-first.safetensors');
    const tensors = {
      '0': { shape: [1], data: BigInt64Array.from([5n]) },
      ' ': { shape: [0, 1], data: new Int32Array(0) },
    };
    const r = readSafetensorsVerified(p, writeSafetensorsStreaming(p, tensors));
    expect([...r.keys()]).toEqual([...parseSafetensors(readFileSync(p), p).keys()]);
    expect(Array.from(r.get('0')!.data as BigInt64Array)).toEqual([5n]);
    expect(r.get(' ')!.shape).toEqual([0, 1]);
  });

  it('keeps a tensor named "__proto__" (an own key of the header, not the object prototype)', () => {
    const p = join(dir, 'proto.safetensors');
    const tensors = new Map([['__proto__', { shape: [2], data: Float32Array.of(1, 2) }]]);
    const r = readSafetensorsVerified(p, writeSafetensorsStreaming(p, tensors));
    expect(Array.from(r.get('__proto__')!.data as Float32Array)).toEqual([1, 2]);
  });

  it('streams a tensor larger than its 64 MiB write/read chunk', () => {
    const n = 20 << 20; // 80 MiB of F32
    const big = new Float32Array(n);
    for (let i = 0; i < n; i += 4096) big[i] = i;
    big[n - 1] = 42;
    const p = join(dir, 'big.safetensors');
    const w = writeSafetensorsStreaming(p, {
      big: { shape: [n], data: big },
      small: { shape: [1], data: Float32Array.of(7) },
    });
    const r = readSafetensorsVerified(p, w);
    const got = r.get('big')!.data as Float32Array;
    expect(got.length).toBe(n);
    expect(got[4096 * 100]).toBe(4096 * 100);
    expect(got[n - 1]).toBe(42);
    expect(() => readSafetensorsVerified(p, { ...w, sha256: '0'.repeat(64) })).toThrow(
      /big\.safetensors is corrupted: SHA-256 .* does not match/,
    );
    expect(() => readSafetensorsVerified(p, { ...w, bytes: w.bytes + 1 })).toThrow(/bytes, the manifest lists/);
  });
});
