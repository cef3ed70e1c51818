// Running `moe-actors grad` on a parity fixture (test/fixtures/parity/<case>) and judging what it wrote.
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { getF32, readSafetensors } from '../../src/models/safetensors.ts';
import { relMaxDiff } from '../models/fixtures.ts';
import { cli, PARITY, show, type CliOptions, type CliResult } from './helpers.ts';

export const fx = (c: string) => ({
  config: join(PARITY, c, 'config.toml'),
  weights: join(PARITY, c, 'weights.safetensors'),
  batch: join(PARITY, c, 'batch.safetensors'),
  expected: join(PARITY, c, 'expected.safetensors'),
});

/** A temp folder for one test file; `cleanup` removes it. */
export function scratch(prefix: string): { dir: string; out: () => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  let n = 0;
  return {
    dir,
    // Each output in a folder of its own, so "nothing written" also covers writeSafetensors' temp files.
    out: () => join(dir, `out-${n++}`, 'grads.safetensors'),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export interface GradRun {
  r: CliResult;
  out: string;
}

export async function grad(
  c: string,
  out: string,
  extra: string[] = [],
  o: CliOptions & { files?: Partial<ReturnType<typeof fx>> } = {},
): Promise<GradRun> {
  const f = { ...fx(c), ...o.files };
  const r = await cli(
    ['grad', '--config', f.config, '--checkpoint', f.weights, '--batch', f.batch, '--out', out, ...extra],
    o,
  );
  return { r, out };
}

/** The written file against the reference: same tensor set and shapes, loss and every gradient within tolerance. */
export function expectParity(out: string, expectedPath: string): { lossRel: number; worst: [string, number] } {
  const got = readSafetensors(out);
  const want = readSafetensors(expectedPath);
  const wantNames = [...want.keys()].filter((k) => k.startsWith('grad.')).sort();
  const gotNames = [...got.keys()].filter((k) => k !== 'loss').sort();
  expect(gotNames).toEqual(wantNames);
  const loss = got.get('loss')!;
  expect(loss.dtype).toBe('F32');
  expect(loss.shape).toEqual([]);
  const refLoss = getF32(want, 'loss')[0]!;
  const lossRel = Math.abs(getF32(got, 'loss')[0]! - refLoss) / Math.abs(refLoss);
  expect(lossRel, 'loss').toBeLessThan(1e-5);
  let worst: [string, number] = ['', 0];
  for (const name of wantNames) {
    expect(got.get(name)!.shape, name).toEqual(want.get(name)!.shape);
    const d = relMaxDiff(getF32(got, name), getF32(want, name));
    expect(d, name).toBeLessThan(1e-4);
    if (d > worst[1]) worst = [name, d];
  }
  return { lossRel, worst };
}

/** Exit code 1, the expected message on one line (no stack), and no file — not even a temp file — written. */
export function expectFailure(g: GradRun, ...messages: (string | RegExp)[]): void {
  expect(g.r.code, show(g.r)).toBe(1);
  expect(g.r.timedOut).toBe(false);
  for (const m of messages) {
    if (typeof m === 'string') expect(g.r.stderr, show(g.r)).toContain(m);
    else expect(g.r.stderr, show(g.r)).toMatch(m);
  }
  expect(g.r.stderr.trim().split('\n'), show(g.r)).toHaveLength(1);
  expect(existsSync(g.out), 'no output file').toBe(false);
  const dir = join(g.out, '..');
  expect(existsSync(dir) ? readdirSync(dir) : [], 'no temporary files either').toEqual([]);
}
