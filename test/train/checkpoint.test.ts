import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  assembleTensors,
  CheckpointError,
  commitManifest,
  configHash,
  latestComplete,
  listCheckpoints,
  loadSlices,
  pruneCheckpoints,
  readCheckpoint,
  stepDir,
  writeCheckpoint,
  writeRankShard,
  type RankPayload,
} from '../../src/train/checkpoint/index.ts';
import { loadJobConfig } from '../../src/train/job-config.ts';

const root = mkdtempSync(join(tmpdir(), 'moe-ckpt-'));
let n = 0;
const newFolder = () => join(root, `run${n++}`);
const meta = { configHash: 'sha256:test', mesh: { dp_shard: 2 } };

function f32(len: number, seed: number): Float32Array {
  return Float32Array.from({ length: len }, (_, i) => Math.sin(seed * 1000 + i));
}

function payload(rank: number): RankPayload {
  return {
    tensors: {
      'tok_embeddings.weight': { shape: [4, 3], data: f32(12, rank) },
      'optim.exp_avg.tok_embeddings.weight': { shape: [4, 3], data: f32(12, rank + 10) },
      'optim.exp_avg_sq.tok_embeddings.weight': { shape: [4, 3], data: f32(12, rank + 20) },
      'layers.0.moe.tokens_per_expert': { shape: [2], data: Int32Array.of(rank, 7) },
    },
    extras: { lr_scheduler: { step: 10 }, data: { docIndex: rank * 5 }, rng: [1, 2, rank] },
  };
}

/** Flips byte `at` (negative: from the end). */
function flipByte(path: string, at: number): void {
  const b = readFileSync(path);
  if (at < 0) at += b.length;
  b[at] = b[at]! ^ 0xff;
  writeFileSync(path, b);
}

describe('write → read round trip', () => {
  it('reads back every rank’s tensors and extras; the manifest lists each file with its size and SHA-256', () => {
    const folder = newFolder();
    const dir = writeCheckpoint(folder, 10, [payload(0), payload(1)], meta);
    expect(dir).toBe(stepDir(folder, 10));
    expect(readdirSync(dir).sort()).toEqual([
      'manifest.json',
      'rank0.json',
      'rank0.safetensors',
      'rank1.json',
      'rank1.safetensors',
    ]);
    const ck = readCheckpoint(dir);
    expect(ck.manifest).toMatchObject({
      step: 10,
      configHash: 'sha256:test',
      mesh: { dp_shard: 2 },
      worldSize: 2,
      version: 1,
    });
    for (const f of ck.manifest.files) {
      const bytes = readFileSync(join(dir, f.name));
      expect(f.bytes).toBe(bytes.length);
      expect(f.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    }
    for (const r of [0, 1]) {
      const s = ck.shards[r]!;
      const want = payload(r);
      for (const [name, t] of Object.entries(want.tensors)) {
        expect(s.tensors.get(name)!.shape).toEqual(t.shape);
        expect(Array.from(s.tensors.get(name)!.data as Float32Array)).toEqual(Array.from(t.data as Float32Array));
      }
      expect(s.extras).toEqual(want.extras);
    }
    expect(readCheckpoint(dir, { ranks: [1] }).shards.map((s) => s.rank)).toEqual([1]);
    expect(() => readCheckpoint(dir, { ranks: [2] })).toThrow(/written by 2 ranks; there is no rank 2/);
  });

  it('ranks write their own files; the commit needs every rank and then removes markers and stale files', () => {
    const folder = newFolder();
    const dir = stepDir(folder, 5);
    // An earlier, complete write of this step by 3 ranks: rewriting it must invalidate its manifest at once.
    writeCheckpoint(folder, 5, [payload(0), payload(1), payload(2)], meta);
    writeRankShard(dir, 1, payload(1));
    expect(latestComplete(folder)).toBeNull();
    expect(() => commitManifest(dir, { ...meta, step: 5, worldSize: 2 })).toThrow(
      /rank 0 has not finished writing \(rank0\.done\.json is missing\)/,
    );
    writeRankShard(dir, 0, payload(0));
    const m = commitManifest(dir, { ...meta, step: 5, worldSize: 2 });
    expect(m.files.map((f) => f.name)).toEqual(['rank0.safetensors', 'rank0.json', 'rank1.safetensors', 'rank1.json']);
    expect(readdirSync(dir).sort()).toEqual([
      'manifest.json',
      'rank0.json',
      'rank0.safetensors',
      'rank1.json',
      'rank1.safetensors',
    ]);
    expect(latestComplete(folder)?.step).toBe(5);
  });

  it('rejects a slice that does not fit its tensor before writing anything', () => {
    const dir = stepDir(newFolder(), 1);
    const bad: RankPayload = {
      tensors: { w: { shape: [2, 3], data: f32(6, 1) } },
      slices: { w: { globalShape: [4, 3], dim0: [1, 2] } },
    };
    expect(() => writeRankShard(dir, 0, bad)).toThrow(
      /local shape \[2, 3\] does not match its slice \(expected \[1, 3\]\)/,
    );
    expect(existsSync(join(dir, 'rank0.safetensors'))).toBe(false);
  });
});

describe('listing, verification, corruption', () => {
  it('lists complete checkpoints and partial ones with the reason; a corrupted file is named', () => {
    const folder = newFolder();
    for (const s of [1, 2, 3, 4]) writeCheckpoint(folder, s, [payload(0), payload(1)], meta);
    writeRankShard(stepDir(folder, 5), 0, payload(0)); // crashed before the manifest
    flipByte(join(stepDir(folder, 3), 'rank1.safetensors'), -5); // bit rot in the last tensor's data, same size
    truncateSync(join(stepDir(folder, 4), 'rank0.json'), 3);

    const l = listCheckpoints(folder);
    expect(l.complete.map((c) => c.step)).toEqual([1, 2]);
    expect(l.partial.map((p) => p.step)).toEqual([3, 4, 5]);
    expect(l.partial[0]!.reason).toMatch(/step-3\/rank1\.safetensors is corrupted: SHA-256/);
    expect(l.partial[1]!.reason).toMatch(/step-4\/rank0\.json is corrupted: 3 bytes, the manifest lists \d+/);
    expect(l.partial[2]!.reason).toMatch(/step-5 is incomplete: no manifest\.json/);
    // A size-only listing is cheaper and misses the flipped byte; reading the checkpoint still catches it.
    expect(listCheckpoints(folder, { verify: 'size' }).complete.map((c) => c.step)).toEqual([1, 2, 3]);
    expect(() => readCheckpoint(stepDir(folder, 3))).toThrow(CheckpointError);
    expect(() => readCheckpoint(stepDir(folder, 3))).toThrow(
      /rank1\.safetensors is corrupted: SHA-256 .* load an older one/,
    );
    flipByte(join(stepDir(folder, 2), 'rank0.safetensors'), 12); // inside the JSON header
    expect(() => readCheckpoint(stepDir(folder, 2))).toThrow(/step-2\/rank0\.safetensors is corrupted: /);
    flipByte(join(stepDir(folder, 2), 'rank0.safetensors'), 12);
    const skipped: string[] = [];
    expect(latestComplete(folder, { skipped: (p) => skipped.push(`${p.step}`) })?.step).toBe(2);
    expect(skipped).toEqual(['5', '4', '3']);
    expect(latestComplete(join(root, 'nothing-here'))).toBeNull();
  });

  it('keep_latest_k deletes older complete checkpoints and crashed leftovers, never a newer partial one', () => {
    const folder = newFolder();
    for (const s of [10, 20, 30, 40, 50]) writeCheckpoint(folder, s, [payload(0)], meta);
    writeRankShard(stepDir(folder, 25), 0, payload(0)); // crash leftover
    writeRankShard(stepDir(folder, 60), 0, payload(0)); // in progress
    const r = pruneCheckpoints(folder, 2);
    expect(r.kept).toEqual([40, 50]);
    expect(r.removed.map((x) => x.step).sort((a, b) => a - b)).toEqual([10, 20, 25, 30]);
    expect(readdirSync(folder).sort()).toEqual(['step-40', 'step-50', 'step-60']);
    expect(pruneCheckpoints(folder, 0).removed).toEqual([]);
  });
});

describe('re-sharding on load', () => {
  // A model fragment written by 4 ranks with EP 4 and FSDP 4:
  //   experts w1 (8, 3, 2): Shard(0) over EP — rank r holds experts [2r, 2r+2);
  //   attention wq (5, 3) = 15 elements: FSDP flat shards of uneven size [0,4) [4,8) [8,12) [12,15);
  //   expert_bias (8): replicated on every rank; tokens_per_expert (I32): replicated.
  const E = 8;
  const w1 = f32(E * 3 * 2, 1);
  const wq = f32(15, 2);
  const m1 = f32(E * 3 * 2, 3); // Adam moment of w1, sharded like w1
  const bias = f32(E, 4);
  const counts = Int32Array.from({ length: E }, (_, i) => 3 * i);
  const flat = [0, 4, 8, 12, 15];

  function ep4(): string {
    const folder = newFolder();
    const payloads: RankPayload[] = [0, 1, 2, 3].map((r) => ({
      tensors: {
        'layers.0.moe.experts.w1': { shape: [2, 3, 2], data: w1.slice(r * 12, r * 12 + 12) },
        'optim.exp_avg.layers.0.moe.experts.w1': { shape: [2, 3, 2], data: m1.slice(r * 12, r * 12 + 12) },
        'layers.0.attention.wq.weight': { shape: [flat[r + 1]! - flat[r]!], data: wq.slice(flat[r], flat[r + 1]) },
        'layers.0.moe.expert_bias': { shape: [E], data: bias.slice() },
        'layers.0.moe.tokens_per_expert': { shape: [E], data: counts.slice() },
      },
      slices: {
        'layers.0.moe.experts.w1': { globalShape: [E, 3, 2], dim0: [2 * r, 2 * r + 2] },
        'optim.exp_avg.layers.0.moe.experts.w1': { globalShape: [E, 3, 2], dim0: [2 * r, 2 * r + 2] },
        'layers.0.attention.wq.weight': { globalShape: [5, 3], flat: [flat[r]!, flat[r + 1]!] },
      },
      extras: { rank: r },
    }));
    return writeCheckpoint(folder, 7, payloads, { configHash: 'h', mesh: { dp_shard: 4, ep: 4 } });
  }

  it('assembles full tensors from 4 shards (EP 4 → 1)', () => {
    const full = assembleTensors(readCheckpoint(ep4()));
    expect(full.get('layers.0.moe.experts.w1')!.shape).toEqual([E, 3, 2]);
    expect(Array.from(full.get('layers.0.moe.experts.w1')!.data as Float32Array)).toEqual(Array.from(w1));
    expect(Array.from(full.get('optim.exp_avg.layers.0.moe.experts.w1')!.data as Float32Array)).toEqual(Array.from(m1));
    expect(full.get('layers.0.attention.wq.weight')!.shape).toEqual([5, 3]);
    expect(Array.from(full.get('layers.0.attention.wq.weight')!.data as Float32Array)).toEqual(Array.from(wq));
    expect(Array.from(full.get('layers.0.moe.expert_bias')!.data as Float32Array)).toEqual(Array.from(bias));
    expect(full.get('layers.0.moe.tokens_per_expert')!.data).toEqual(counts);
  });

  it('loads the slices of a 2-rank mesh (EP 4 → 2, FSDP 4 → 2) straight from disk', () => {
    const dir = ep4();
    const half = [0, 8, 15];
    for (const r of [0, 1]) {
      const got = loadSlices(dir, {
        'layers.0.moe.experts.w1': { globalShape: [E, 3, 2], dim0: [4 * r, 4 * r + 4] },
        'layers.0.attention.wq.weight': { globalShape: [5, 3], flat: [half[r]!, half[r + 1]!] },
        'layers.0.moe.expert_bias': 'full',
      });
      const w = got.get('layers.0.moe.experts.w1')!;
      expect(w.shape).toEqual([4, 3, 2]);
      expect(Array.from(w.data as Float32Array)).toEqual(Array.from(w1.subarray(24 * r, 24 * r + 24)));
      const q = got.get('layers.0.attention.wq.weight')!;
      expect(q.shape).toEqual([half[r + 1]! - half[r]!]);
      expect(Array.from(q.data as Float32Array)).toEqual(Array.from(wq.subarray(half[r], half[r + 1])));
      expect(Array.from(got.get('layers.0.moe.expert_bias')!.data as Float32Array)).toEqual(Array.from(bias));
    }
  });

  it('names what is missing or inconsistent', () => {
    const dir = ep4();
    expect(() => loadSlices(dir, { 'layers.9.nope': 'full' })).toThrow(/tensor "layers.9.nope" is in no rank file/);
    expect(() => loadSlices(dir, { 'layers.0.moe.experts.w1': { globalShape: [16, 3, 2], dim0: [0, 2] } })).toThrow(
      /global shape \[16, 3, 2\] but the checkpoint holds \[8, 3, 2\]/,
    );
    // Lose rank 2's file contents: its experts are then held by no file.
    const folder = newFolder();
    writeCheckpoint(
      folder,
      1,
      [0, 1].map((r) => ({
        tensors: { w: { shape: [1, 2], data: f32(2, r) } },
        slices: { w: { globalShape: [3, 2], dim0: [r, r + 1] as [number, number] } },
      })),
      meta,
    );
    expect(() => loadSlices(stepDir(folder, 1), { w: 'full' })).toThrow(
      /tensor "w": elements \[4, …\) of the flattened global tensor are held by no rank file/,
    );
  });
});

describe('config hash', () => {
  it('changes with the model or training settings, not with parallelism or logging', () => {
    const a = loadJobConfig(null, ['--training.seq_len', '64']);
    expect(configHash(a)).toMatch(/^sha256:[0-9a-f]{16}$/);
    expect(
      configHash(
        loadJobConfig(null, [
          '--training.seq_len',
          '64',
          '--parallelism.expert_parallel_degree',
          '4',
          '--metrics.log_freq',
          '1',
        ]),
      ),
    ).toBe(configHash(a));
    expect(configHash(loadJobConfig(null, ['--training.seq_len', '128']))).not.toBe(configHash(a));
    expect(
      configHash(loadJobConfig(null, ['--training.seq_len', '64', '--model.flavor', 'debugmodel_12_rank'])),
    ).not.toBe(configHash(a));
  });
});
