// Reading a checkpoint back. Every file read is checked against the manifest's size and SHA-256 first, so a
// corrupted or truncated file is reported by name instead of surfacing as wrong weights.

import { join } from 'node:path';
import type { SafetensorsFile } from '../../models/safetensors.ts';
import { sha256Hex } from './atomic.ts';
import { CheckpointError, extrasFileName, shardFileName, type Manifest } from './format.ts';
import { checkSlice, parseSlices, type TensorSlice } from './slices.ts';
import { MAX_EXTRAS_BYTES } from './confine.ts';
import { readSafetensorsVerified } from './st-stream.ts';
import { readBounded, readManifest, verifyFile } from './verify.ts';

export interface RankShard {
  rank: number;
  tensors: SafetensorsFile;
  /** Slices of the sharded tensors; tensors not listed are full replicas. */
  slices: Record<string, TensorSlice>;
  extras: Record<string, unknown>;
}

export interface LoadedCheckpoint {
  dir: string;
  manifest: Manifest;
  /** The ranks asked for (all by default), in ascending rank order. */
  shards: RankShard[];
}

/** A (small) file's bytes, checked against its manifest entry (size and checksum). */
export function readVerified(dir: string, manifest: Manifest, name: string): Buffer {
  const entry = manifest.files.find((f) => f.name === name);
  const p = join(dir, name);
  if (!entry)
    throw new CheckpointError(`${p} is not listed in the manifest of ${dir} (world size ${manifest.worldSize})`, p);
  verifyFile(dir, entry, 'size');
  if (entry.bytes > MAX_EXTRAS_BYTES)
    throw new CheckpointError(
      `${p} is ${entry.bytes} bytes, more than rank extras can be (${MAX_EXTRAS_BYTES}); the checkpoint is corrupted`,
      p,
    );
  const bytes = readBounded(p, entry.bytes);
  const sha = sha256Hex(bytes);
  if (sha !== entry.sha256) {
    throw new CheckpointError(
      `${p} is corrupted: SHA-256 ${sha.slice(0, 16)}… does not match the manifest's ${entry.sha256.slice(0, 16)}…; ` +
        'this checkpoint cannot be used — load an older one (--checkpoint.load_step) or delete this step folder',
      p,
    );
  }
  return bytes;
}

export function readRankShard(dir: string, rank: number, manifest: Manifest = readManifest(dir)): RankShard {
  if (!(Number.isInteger(rank) && rank >= 0 && rank < manifest.worldSize)) {
    throw new CheckpointError(
      `${dir} was written by ${manifest.worldSize} ranks; there is no rank ${rank} (re-shard with loadSlices)`,
      dir,
    );
  }
  const stName = shardFileName(rank);
  const entry = manifest.files.find((f) => f.name === stName);
  if (!entry)
    throw new CheckpointError(`${join(dir, stName)} is not listed in the manifest of ${dir}`, join(dir, stName));
  const tensors = readSafetensorsVerified(join(dir, stName), entry);
  const extrasPath = join(dir, extrasFileName(rank));
  let extras: Record<string, unknown>;
  try {
    extras = JSON.parse(readVerified(dir, manifest, extrasFileName(rank)).toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`${extrasPath} is not valid JSON (${(e as Error).message})`, extrasPath);
  }
  if (extras === null || typeof extras !== 'object' || Array.isArray(extras))
    throw new CheckpointError(`${extrasPath} is not a JSON object`, extrasPath);
  let slices: Record<string, TensorSlice>;
  try {
    slices = parseSlices(tensors.metadata, join(dir, stName));
  } catch (e) {
    throw new CheckpointError((e as Error).message, join(dir, stName));
  }
  // Every slice is checked, used or not: a slice out of range is a corrupted file, whichever tensors this load wants.
  for (const [name, sl] of Object.entries(slices)) {
    const t = tensors.get(name);
    const why = t ? checkSlice(name, sl, t.shape) : `a slice is given for "${name}" but the file has no such tensor`;
    if (why) throw new CheckpointError(`${join(dir, stName)} is corrupted: ${why}`, join(dir, stName));
  }
  return { rank, tensors, slices, extras };
}

/** Reads (and verifies) a complete checkpoint: all ranks, or the ones listed. */
export function readCheckpoint(dir: string, opts: { ranks?: readonly number[] } = {}): LoadedCheckpoint {
  const manifest = readManifest(dir);
  // Even when reading one rank, the checkpoint must be whole: every listed file present at its size.
  for (const f of manifest.files) verifyFile(dir, f, 'size');
  const ranks = opts.ranks
    ? [...opts.ranks].sort((a, b) => a - b)
    : Array.from({ length: manifest.worldSize }, (_, r) => r);
  return { dir, manifest, shards: ranks.map((r) => readRankShard(dir, r, manifest)) };
}
