import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { afterAll, describe, expect, it } from 'vitest';
import {
  getF32,
  getF64,
  getI32,
  getI64,
  getInt32,
  getScalarF32,
  parseSafetensors,
  readSafetensors,
  readSafetensorsAsync,
  SafetensorsError,
  serializeSafetensors,
  writeSafetensors,
} from '../../src/models/safetensors.ts';

const dir = mkdtempSync(join(tmpdir(), 'st-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FIXTURE = new URL('../fixtures/parity/python_io.safetensors', import.meta.url).pathname;

/** Build a file image from a raw header object and a data section. */
function image(header: unknown, data: Uint8Array = new Uint8Array(0), headerText?: string): Uint8Array {
  const h = new TextEncoder().encode(headerText ?? JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function expectError(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected an error').toBeInstanceOf(Error);
  const msg = (err as Error).message;
  for (const p of parts) {
    if (typeof p === 'string') expect(msg).toContain(p);
    else expect(msg).toMatch(p);
  }
}

describe('safetensors round trip', () => {
  it('writes and reads back every dtype, shapes, scalars, empty tensors and metadata', () => {
    const path = join(dir, 'rt.safetensors');
    const a = Float32Array.from([1.5, -2, 3.25, Math.fround(Math.PI), -0, 1e-38]);
    const b = Float64Array.from([Math.PI, -1e300, 5e-324]);
    const c = Int32Array.from([-2147483648, 2147483647, 0, 7]);
    const d = BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, -100n]);
    writeSafetensors(
      path,
      {
        'layers.0.w': { shape: [2, 3], data: a },
        f64: { dtype: 'F64', shape: [3], data: b },
        i32: { shape: [2, 2], data: c },
        i64: { shape: [3], data: d },
        scalar: { shape: [], data: Float32Array.from([7.5]) },
        empty: { shape: [0, 5], data: new Float32Array(0) },
      },
      { step: '3', note: 'héllo' },
    );
    // no temp files left behind
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    // data section 8-byte aligned
    const raw = readFileSync(path);
    expect(Number(raw.readBigUInt64LE(0)) % 8).toBe(0);

    const f = readSafetensors(path);
    expect(f.path).toBe(path);
    expect(f.metadata).toEqual({ step: '3', note: 'héllo' });
    expect([...f.keys()].sort()).toEqual(['empty', 'f64', 'i32', 'i64', 'layers.0.w', 'scalar']);
    expect(getF32(f, 'layers.0.w', [2, 3])).toEqual(a);
    expect(Object.is(getF32(f, 'layers.0.w')[4], -0)).toBe(true);
    expect(getF64(f, 'f64', [3])).toEqual(b);
    expect(getI32(f, 'i32', [2, 2])).toEqual(c);
    expect(getI64(f, 'i64', [3])).toEqual(d);
    expect(getScalarF32(f, 'scalar')).toBe(7.5);
    expect(f.get('scalar')!.shape).toEqual([]);
    expect(getF32(f, 'empty', [0, 5]).length).toBe(0);
    expect(getInt32(f, 'i32')).toEqual(c);
  });

  it('overwrites an existing file atomically and reads the same bytes as serializeSafetensors', async () => {
    const path = join(dir, 'over.safetensors');
    writeFileSync(path, 'garbage');
    const tensors = new Map([['x', { shape: [2], data: Float32Array.from([1, 2]) }]]);
    writeSafetensors(path, tensors);
    expect(new Uint8Array(readFileSync(path))).toEqual(serializeSafetensors(tensors));
    const f = await readSafetensorsAsync(path);
    expect(getF32(f, 'x', [2])).toEqual(Float32Array.from([1, 2]));
    expect(f.metadata).toEqual({});
  });

  it('returns aligned copies even when the file offsets are unaligned', () => {
    const data = new Uint8Array(12);
    new DataView(data.buffer).setFloat32(4, 2.5, true);
    new DataView(data.buffer).setFloat32(8, -1, true);
    const header = JSON.stringify({
      pad: { dtype: 'I32', shape: [1], data_offsets: [0, 4] },
      x: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    });
    // pad the header (trailing spaces are legal) to an odd length: the tensor's bytes are then unaligned in the image
    const text = header.length % 2 === 1 ? header : header + ' ';
    const img = image(null, data, text);
    expect((8 + text.length + 4) % 4).not.toBe(0);
    const f = parseSafetensors(img);
    expect(getF32(f, 'x', [2])).toEqual(Float32Array.from([2.5, -1]));
  });

  it('refuses to serialize inconsistent tensors', () => {
    expectError(
      () => serializeSafetensors({ x: { shape: [2, 2], data: new Float32Array(3) } }),
      'tensor "x"',
      '[2, 2]',
      '4 elements',
      'has 3',
    );
    expectError(
      () => serializeSafetensors({ x: { dtype: 'F64', shape: [1], data: new Float32Array(1) } }),
      'tensor "x"',
      'F64',
      'Float32Array',
    );
  });
});

describe('safetensors written by Python (scripts/reference/make_io_fixture.py)', () => {
  it('reads every tensor with the expected dtype, shape and values', () => {
    const f = readSafetensors(FIXTURE);
    expect(f.metadata).toEqual({ writer: 'st_io.py', format: 'pt' });
    expect(getScalarF32(f, 'scalar')).toBe(3.5);
    expect(f.get('scalar')!.shape).toEqual([]);
    expect(getF32(f, 'a.f32', [2, 3])).toEqual(Float32Array.from([-0.5, -0.25, 0, 0.25, 0.5, 0.75]));
    expect(getF64(f, 'b.f64', [3])).toEqual(Float64Array.from([1 / 3, -2.5e-300, 1e300]));
    expect(getI32(f, 'c.i32', [2, 2])).toEqual(Int32Array.from([-7, 0, 2147483647, -2147483648]));
    expect(getI64(f, 'd.i64', [2, 3])).toEqual(BigInt64Array.from([-100n, 0n, 5n, 127n, -1n, 2n ** 31n - 1n]));
    expect(getInt32(f, 'd.i64', [2, 3])).toEqual(Int32Array.from([-100, 0, 5, 127, -1, 2147483647]));
    expect(getF32(f, 'empty', [0, 4]).length).toBe(0);
  });

  it('range-checks int64 → int32 conversion, naming the tensor and element', () => {
    const f = readSafetensors(FIXTURE);
    expectError(() => getInt32(f, 'e.i64big'), FIXTURE, 'e.i64big', 'element 0', '1099511627776', 'int32');
    expect(getI64(f, 'e.i64big', [2])).toEqual(BigInt64Array.from([2n ** 40n, -(2n ** 33n)]));
  });

  it('checked getters name the file, the tensor, the expected and the actual shape/dtype', () => {
    const f = readSafetensors(FIXTURE);
    expectError(() => getF32(f, 'a.f32', [3, 2]), FIXTURE, 'tensor "a.f32"', 'expected F32 [3, 2]', 'got F32 [2, 3]');
    expectError(() => getF32(f, 'b.f64', [3]), 'tensor "b.f64"', 'expected F32 [3]', 'got F64 [3]');
    expectError(() => getF32(f, 'nope', [1]), FIXTURE, 'missing tensor "nope"');
    expectError(() => getScalarF32(f, 'a.f32'), 'tensor "a.f32"', 'scalar');
    expect(() => getF32(f, 'a.f32', [3, 2])).toThrow(SafetensorsError);
  });
});

describe('safetensors corruption', () => {
  const good = serializeSafetensors({
    x: { shape: [4], data: Float32Array.from([1, 2, 3, 4]) },
    y: { shape: [1], data: BigInt64Array.from([9n]) },
  });

  function writeBad(name: string, bytes: Uint8Array): string {
    const p = join(dir, name);
    writeFileSync(p, bytes);
    return p;
  }

  it('truncated: shorter than the length prefix', () => {
    const p = writeBad('t0.safetensors', good.subarray(0, 5));
    expectError(() => readSafetensors(p), p, 'truncated file', '5 bytes');
  });

  it('truncated: header cut', () => {
    const p = writeBad('t1.safetensors', good.subarray(0, 20));
    expectError(() => readSafetensors(p), p, 'truncated file', 'header length');
  });

  it('truncated: data section cut', () => {
    const p = writeBad('t2.safetensors', good.subarray(0, good.length - 3));
    expectError(() => readSafetensors(p), p, 'offsets out of range', /tensor "[xy]"/, 'truncated file?');
  });

  it('bad header: invalid JSON, not an object, not UTF-8, absurd length', () => {
    expectError(() => parseSafetensors(image(null, undefined, '{"x": ')), '<buffer>', 'bad header', 'invalid JSON');
    expectError(() => parseSafetensors(image(null, undefined, '[1,2]')), 'bad header', "must start with '{'");
    const bad = image(null, undefined, '{"a":1}');
    bad[10] = 0xff;
    expectError(() => parseSafetensors(bad), 'bad header', 'UTF-8');
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, 2n ** 62n, true);
    expectError(() => parseSafetensors(huge), 'bad header', 'exceeds');
    expectError(() => parseSafetensors(image({ x: 5 })), 'bad header', 'tensor "x"', 'not an object');
    expectError(
      () => parseSafetensors(image({ x: { dtype: 'F32', shape: [-1], data_offsets: [0, 0] } })),
      'tensor "x"',
      'invalid shape',
    );
    expectError(
      () => parseSafetensors(image({ x: { dtype: 'F32', shape: [1], data_offsets: [0] } })),
      'tensor "x"',
      'invalid data_offsets',
    );
    expectError(() => parseSafetensors(image({ __metadata__: { a: 1 } })), '__metadata__.a is not a string');
  });

  it('offsets out of range, inconsistent with the shape, overlapping, with gaps or trailing bytes', () => {
    const d8 = new Uint8Array(8);
    expectError(
      () => parseSafetensors(image({ x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, d8), 'f.st'),
      'f.st',
      'offsets out of range',
      'tensor "x"',
      '[0, 16]',
      '8-byte',
    );
    expectError(
      () => parseSafetensors(image({ x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, d8)),
      'tensor "x"',
      'needs 12 bytes',
    );
    expectError(
      () => parseSafetensors(image({ x: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, d8)),
      'tensor "x"',
      'end < begin',
    );
    expectError(
      () =>
        parseSafetensors(
          image(
            {
              x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
              y: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
            },
            d8,
          ),
        ),
      'overlap',
    );
    expectError(
      () => parseSafetensors(image({ x: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, d8)),
      'gap',
      'tensor "x"',
    );
    expectError(
      () => parseSafetensors(image({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, d8)),
      'trailing bytes',
    );
  });

  it('unknown and unsupported dtypes name the tensor', () => {
    const d4 = new Uint8Array(4);
    expectError(
      () => parseSafetensors(image({ w: { dtype: 'Q7', shape: [1], data_offsets: [0, 4] } }, d4), 'q.st'),
      'q.st',
      'unknown dtype "Q7"',
      'tensor "w"',
    );
    expectError(
      () => parseSafetensors(image({ w: { dtype: 'BF16', shape: [2], data_offsets: [0, 4] } }, d4)),
      'unsupported dtype BF16',
      'tensor "w"',
    );
    expectError(
      () => parseSafetensors(image({ w: { shape: [2], data_offsets: [0, 4] } }, d4)),
      'tensor "w"',
      'no dtype',
    );
  });

  it('missing file', () => {
    const p = join(dir, 'does-not-exist.safetensors');
    expectError(() => readSafetensors(p), p, 'cannot read file');
  });
});

// The parity fixtures (scripts/reference/make_fixtures.py) read through this module: structure only, no model math.
describe('parity fixtures are well-formed safetensors', () => {
  const root = new URL('../fixtures/parity/', import.meta.url).pathname;
  const cases = readdirSync(root).filter((d) => statSync(join(root, d)).isDirectory());

  it('there are cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(6);
  });

  for (const c of cases) {
    it(c, () => {
      const dirc = join(root, c);
      const cfg = parseToml(readFileSync(join(dirc, 'config.toml'), 'utf8')) as {
        model: { name: string; args: { vocab_size: number; moe_args: { num_experts: number } } };
        training: { seq_len: number; local_batch_size: number; steps?: number };
      };
      expect(['llama4', 'deepseek_v3']).toContain(cfg.model.name);
      const B = cfg.training.local_batch_size;
      const S = cfg.training.seq_len;
      const V = cfg.model.args.vocab_size;
      const E = cfg.model.args.moe_args.num_experts;

      const w = readSafetensors(join(dirc, 'weights.safetensors'));
      const params = [...w.keys()].filter((k) => !k.endsWith('.moe.expert_bias'));
      const biases = [...w.keys()].filter((k) => k.endsWith('.moe.expert_bias'));
      expect(params).toContain('tok_embeddings.weight');
      expect(params).toContain('output.weight');
      expect(biases.length).toBeGreaterThan(0);
      for (const k of w.keys()) expect(w.get(k)!.dtype, k).toBe('F32');
      getF32(w, 'tok_embeddings.weight', [V, w.get('tok_embeddings.weight')!.shape[1]!]);
      for (const b of biases) {
        const eb = getF32(w, b, [E]);
        expect(Math.abs(eb.reduce((a, x) => a + x, 0)), b).toBeLessThan(1e-6);
        expect(
          eb.some((x) => x !== 0),
          b,
        ).toBe(true);
      }

      const batch = readSafetensors(join(dirc, 'batch.safetensors'));
      const tokens = getInt32(batch, 'tokens', [B, S]);
      const labels = getInt32(batch, 'labels', [B, S]);
      expect(tokens.every((t) => t >= 0 && t < V)).toBe(true);
      expect(labels.every((t) => t === -100 || (t >= 0 && t < V))).toBe(true);

      const exp = readSafetensors(join(dirc, 'expected.safetensors'));
      const loss = getScalarF32(exp, 'loss');
      expect(Number.isFinite(loss) && loss > 0).toBe(true);
      getF32(exp, 'logits', [B, S, V]);
      const grads = [...exp.keys()].filter((k) => k.startsWith('grad.')).map((k) => k.slice(5));
      expect(grads.sort()).toEqual([...params].sort());
      for (const k of params) getF32(exp, 'grad.' + k, w.get(k)!.shape);
      for (const b of biases) {
        const pre = 'route.' + b.slice(0, -'expert_bias'.length);
        const counts = getInt32(exp, pre + 'counts', [E]);
        const sel = exp.get(pre + 'selected')!;
        expect(sel.shape[0]).toBe(B * S);
        expect(counts.reduce((a, x) => a + x, 0)).toBe(B * S * sel.shape[1]!);
      }

      const trainPath = join(dirc, 'train.safetensors');
      expect(existsSync(trainPath)).toBe(cfg.training.steps !== undefined);
      if (existsSync(trainPath)) {
        const t = readSafetensors(trainPath);
        for (let i = 1; i <= cfg.training.steps!; i++) {
          for (const what of ['loss', 'grad_norm', 'lr'])
            expect(Number.isFinite(getScalarF32(t, `${what}.step${i}`))).toBe(true);
        }
        expect(getScalarF32(t, 'loss.step1')).toBe(loss);
        for (const k of params) getF32(t, 'param.' + k, w.get(k)!.shape);
        for (const b of biases) getF32(t, 'buffer.' + b, [E]);
      }
    });
  }
});
