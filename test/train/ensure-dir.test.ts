// ensureDir: the folders a job writes to, made one component at a time (Node 20's recursive mkdirSync loops
// forever under /proc; that case runs through the CLI in test/runtime/train-e2e.test.ts, where a hang is bounded).
import { describe, expect, it } from 'vitest';
import { mkdtempSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDir } from '../../src/train/ensure-dir.ts';

const root = mkdtempSync(join(tmpdir(), 'moe-ensure-'));

describe('ensureDir', () => {
  it('makes every missing folder, and accepts one that exists', () => {
    const deep = join(root, 'a', 'b', 'c');
    ensureDir(deep, '[job] dump_folder');
    expect(statSync(deep).isDirectory()).toBe(true);
    ensureDir(deep, '[job] dump_folder');
  });

  it('names the setting and the folder it could not make', () => {
    const file = join(root, 'a-file');
    writeFileSync(file, 'x');
    expect(() => ensureDir(file, '[job] dump_folder')).toThrow(`[job] dump_folder: ${file} exists and is not a folder`);
    expect(() => ensureDir(join(file, 'run'), '--out')).toThrow(
      `--out: cannot create the folder ${join(file, 'run')} (ENOTDIR); choose a writable location`,
    );
    const dangling = join(root, 'dangling');
    symlinkSync(join(root, 'no', 'target'), dangling);
    expect(() => ensureDir(join(dangling, 'run'), '[job] dump_folder')).toThrow(
      /\[job\] dump_folder: cannot create the folder .*dangling \(EEXIST\)/,
    );
  });
});
