// The side pool's size rule, its staging buffers and a write task run on a real pool thread.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { poolThreads } from '../../src/train/pool/size.ts';
import { closeSidePool, configureSidePool, processPool, sidePoolThreads } from '../../src/train/pool/pool.ts';
import { StagingArena, writeRankShard } from '../../src/train/checkpoint/index.ts';

const root = mkdtempSync(join(tmpdir(), 'moe-pool-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('side pool', () => {
  it('gets the cores the ranks leave, at least one', () => {
    expect(poolThreads({ cores: 2, computeThreadsPerRank: 1, ranksInProcess: 4 })).toBe(1);
    expect(poolThreads({ cores: 16, computeThreadsPerRank: 2, ranksInProcess: 4 })).toBe(8);
    expect(poolThreads({ cores: 16, computeThreadsPerRank: 3, ranksInProcess: 1, processesOnNode: 4 })).toBe(1);
    expect(poolThreads({ cores: 64, computeThreadsPerRank: 6, ranksInProcess: 1, processesOnNode: 8 })).toBe(2);
  });

  it('staging copies live on shared memory, are reused and grow to what a capture needs', () => {
    const a = new StagingArena();
    a.begin();
    const x = a.copy(Float32Array.of(1, 2, 3));
    const y = a.copy(Float32Array.of(4));
    expect(x.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect([...x, ...y]).toEqual([1, 2, 3, 4]);
    expect(() => a.begin()).toThrow(/still staged/);
    a.end();
    a.begin();
    const z = a.copy(Float32Array.of(5, 6, 7, 8));
    expect(z.buffer).toBe(a.copy(new Float32Array(0)).buffer);
    expect(a.bytes).toBe(16);
    a.end();
  });

  it('writes a rank shard on a pool thread with the same bytes as on the rank, and closes with no thread left', async () => {
    configureSidePool(1);
    const a = new StagingArena();
    a.begin();
    const w = a.copy(Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i)));
    const tensors = { 'layers.0.w': { shape: [10, 100], data: w } };
    const entries = await processPool().run({
      kind: 'write-shard',
      dir: join(root, 'pool'),
      rank: 1,
      tensors: Object.entries(tensors),
      slices: {},
      extras: { step: 3 },
    });
    a.end();
    expect(sidePoolThreads()).toBe(1);
    const here = writeRankShard(join(root, 'here'), 1, { tensors, extras: { step: 3 } });
    expect(entries).toEqual(here);
    expect(readFileSync(join(root, 'pool', 'rank1.safetensors'))).toEqual(
      readFileSync(join(root, 'here', 'rank1.safetensors')),
    );
    await expect(
      processPool().run({
        kind: 'write-shard',
        dir: join(root, 'pool', 'rank1.json', 'x'),
        rank: 0,
        tensors: [],
        slices: {},
        extras: {},
      }),
    ).rejects.toThrow(/rank1\.json/);
    await closeSidePool();
    expect(sidePoolThreads()).toBe(0);
  });
});
