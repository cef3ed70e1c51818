// Property tests (fast-check) for the readers of untrusted files: a checkpoint's manifest (and the checkpoint it
// vouches for) and safetensors files. Arbitrary mutations of a valid file never hang, never touch a path outside
// the checkpoint's folder, and either load exactly the original tensors or fail with a named error.

import fc from 'fast-check';
import fs, { readFileSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join, relative, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError, readCheckpoint, verifyCheckpoint } from '../../src/train/checkpoint/index.ts';
import { readSafetensorsVerified } from '../../src/train/checkpoint/st-stream.ts';
import { parseSafetensors, SafetensorsError, type SafetensorsFile } from '../../src/models/safetensors.ts';
import { cleanup, sandbox, sha256 } from './harness.ts';

afterAll(cleanup);

/** Every path the fs functions below are asked about while `fn` runs. */
function pathsTouched<T>(fn: () => T): { value?: T; error?: unknown; paths: string[] } {
  const names = [
    'openSync',
    'readFileSync',
    'statSync',
    'lstatSync',
    'existsSync',
    'readdirSync',
    'realpathSync',
  ] as const;
  const saved = Object.fromEntries(names.map((n) => [n, fs[n]]));
  const paths: string[] = [];
  for (const n of names) {
    (fs as Record<string, unknown>)[n] = (p: unknown, ...rest: unknown[]) => {
      if (typeof p === 'string') paths.push(resolve(p));
      return (saved[n] as (...a: unknown[]) => unknown)(p, ...rest);
    };
  }
  syncBuiltinESMExports();
  try {
    return { value: fn(), paths };
  } catch (error) {
    return { error, paths };
  } finally {
    Object.assign(fs, saved);
    syncBuiltinESMExports();
  }
}

const inside = (p: string, dir: string) => !relative(dir, p).startsWith('..');
const tensorsOf = (f: SafetensorsFile) =>
  Object.fromEntries(
    [...f.entries()].map(([k, t]) => [
      k,
      { dtype: t.dtype, shape: t.shape, data: Array.from(t.data as ArrayLike<number | bigint>, String) },
    ]),
  );

/** Hostile values for a manifest field. */
const hostile = fc.oneof(
  fc.constantFrom(
    '../../outside/secret.bin',
    '/etc/hostname',
    '..',
    '.',
    '',
    'rank0.json/..',
    '/dev/zero',
    'rank9.safetensors',
    'manifest.json',
  ),
  fc.constantFrom(0, -1, 1.5, 2 ** 53, 1e308, Number.NaN, null, true, [], {}),
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.jsonValue({ maxDepth: 2 }),
);

/** Where in the manifest to put it: a top-level field, or a field of a file entry. */
const manifestEdit = fc.oneof(
  fc
    .record({
      at: fc.constantFrom('step', 'worldSize', 'configHash', 'mesh', 'files', 'format', 'version'),
      value: hostile,
    })
    .map((e) => (m: any) => (m[e.at] = e.value)),
  fc
    .record({ i: fc.nat(5), field: fc.constantFrom('name', 'rank', 'bytes', 'sha256'), value: hostile })
    .map((e) => (m: any) => {
      if (!Array.isArray(m.files) || m.files.length === 0) return;
      const f = m.files[e.i % m.files.length];
      if (f && typeof f === 'object') f[e.field] = e.value;
    }),
  fc
    .record({ k: fc.constantFrom('dp_shard', 'ep', 'dp_replicate', 'cp', 'xx'), value: hostile })
    .map((e) => (m: any) => {
      if (m.mesh && typeof m.mesh === 'object') m.mesh[e.k] = e.value;
    }),
);

/** Byte-level damage: flip, cut, insert. */
const byteEdit = fc.oneof(
  fc.record({ at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }).map((e) => (b: Buffer) => {
    if (b.length === 0) return b;
    const c = Buffer.from(b);
    c[e.at % c.length]! ^= 1 << e.bit;
    return c;
  }),
  fc.nat().map((at) => (b: Buffer) => b.subarray(0, at % (b.length + 1))),
  fc.record({ at: fc.nat(), bytes: fc.uint8Array({ maxLength: 16 }) }).map((e) => (b: Buffer) => {
    const i = e.at % (b.length + 1);
    return Buffer.concat([b.subarray(0, i), Buffer.from(e.bytes), b.subarray(i)]);
  }),
);

describe('property: the checkpoint manifest reader', () => {
  const sb = sandbox();
  const original = readCheckpoint(sb.step2);
  const want = original.shards.map((s) => tensorsOf(s.tensors));
  const manifestPath = join(sb.step2, 'manifest.json');
  const pristine = readFileSync(manifestPath);

  const check = (mutated: Buffer) => {
    writeFileSync(manifestPath, mutated);
    const r = pathsTouched(() => {
      verifyCheckpoint(sb.step2, 'checksum', 2);
      return readCheckpoint(sb.step2);
    });
    writeFileSync(manifestPath, pristine);
    for (const p of r.paths) expect(inside(p, sb.step2), `read ${p}, outside ${sb.step2}`).toBe(true);
    if (r.error) {
      expect(r.error, String(r.error)).toBeInstanceOf(CheckpointError);
      expect((r.error as Error).message).toMatch(/step-2/);
    } else {
      expect(r.value!.shards.map((s) => tensorsOf(s.tensors))).toEqual(want);
    }
  };

  it('arbitrary field edits: same tensors or a CheckpointError, nothing read outside the step folder', () => {
    fc.assert(
      fc.property(fc.array(manifestEdit, { minLength: 1, maxLength: 3 }), (edits) => {
        const m = JSON.parse(pristine.toString());
        for (const e of edits) e(m);
        check(Buffer.from(JSON.stringify(m)));
      }),
      { numRuns: 150 },
    );
  });

  it('arbitrary byte damage: same tensors or a CheckpointError', () => {
    fc.assert(
      fc.property(fc.array(byteEdit, { minLength: 1, maxLength: 3 }), (edits) => {
        check(edits.reduce<Buffer>((x, e) => e(x), pristine));
      }),
      { numRuns: 150 },
    );
  });
});

describe('property: the safetensors readers', () => {
  const sb = sandbox();
  const file = join(sb.step2, 'rank0.safetensors');
  const pristine = readFileSync(file);
  const want = tensorsOf(parseSafetensors(pristine));

  const p = join(sb.run, 'mutated.safetensors');
  const dataBytes = (f: SafetensorsFile) => [...f.values()].reduce((a, t) => a + t.data.byteLength, 0);

  it('the streaming checkpoint reader, against the manifest of the original: same tensors or a CheckpointError', () => {
    const vouched = { bytes: pristine.length, sha256: sha256(pristine) };
    fc.assert(
      fc.property(fc.array(byteEdit, { minLength: 1, maxLength: 3 }), (edits) => {
        const b = edits.reduce<Buffer>((x, e) => e(x), pristine);
        writeFileSync(p, b);
        const r = pathsTouched(() => readSafetensorsVerified(p, vouched));
        for (const q of r.paths) expect(q).toBe(p);
        if (r.error) expect(r.error, String(r.error)).toBeInstanceOf(CheckpointError);
        else expect(tensorsOf(r.value!)).toEqual(want);
      }),
      { numRuns: 300 },
    );
  });

  it('the streaming reader with a manifest vouching for the damaged bytes: a CheckpointError or tensors within the file', () => {
    fc.assert(
      fc.property(fc.array(byteEdit, { minLength: 1, maxLength: 3 }), (edits) => {
        const b = edits.reduce<Buffer>((x, e) => e(x), pristine);
        writeFileSync(p, b);
        const r = pathsTouched(() => readSafetensorsVerified(p, { bytes: b.length, sha256: sha256(b) }));
        for (const q of r.paths) expect(q).toBe(p);
        if (r.error) expect(r.error, String(r.error)).toBeInstanceOf(CheckpointError);
        else expect(dataBytes(r.value!)).toBeLessThanOrEqual(b.length);
      }),
      { numRuns: 300 },
    );
  });

  it('the in-memory reader (grad, weights): a SafetensorsError or tensors within the file, for any byte damage', () => {
    fc.assert(
      fc.property(fc.array(byteEdit, { minLength: 1, maxLength: 3 }), (edits) => {
        const b = edits.reduce<Buffer>((x, e) => e(x), pristine);
        let f: SafetensorsFile;
        try {
          f = parseSafetensors(b);
        } catch (e) {
          expect(e, String(e)).toBeInstanceOf(SafetensorsError);
          return;
        }
        expect(dataBytes(f)).toBeLessThanOrEqual(b.length);
        if (b.equals(pristine)) expect(tensorsOf(f)).toEqual(want);
      }),
      { numRuns: 300 },
    );
  });
});
