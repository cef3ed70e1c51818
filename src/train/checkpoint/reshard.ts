// Re-sharding on load: build any slice (or the whole) of any tensor from the rank files of a checkpoint written
// on another mesh. Every rank file says which flat element range of each global tensor it holds (slices.ts);
// a wanted slice is a flat range too, so loading is "copy the overlaps": for each source range [a, b) and wanted
// range [c, d), elements [max(a,c), min(b,d)) are copied. Coverage is tracked, and a wanted element that no file
// holds is an error naming the tensor and the range. Replicas (HSDP, or replicated params) may overlap; the first
// file that has an element provides it.
//
// Example: experts written with EP 4 (rank r holds experts [2r, 2r+2) of 8 along dim 0) load onto EP 2 as
// wants = { w1: { globalShape: [8, H, D], dim0: [4, 8] } } on new rank 1, or as 'full' on a single rank.

import type { SafeTensor, SafetensorsData, SafetensorsDType } from '../../models/safetensors.ts';
import { CheckpointError, type Manifest } from './format.ts';
import { readRankShard, type LoadedCheckpoint, type RankShard } from './read.ts';
import { flatRangeOf, localShapeOf, numelOf, type TensorSlice } from './slices.ts';
import { readManifest, verifyFile } from './verify.ts';

export type Want = TensorSlice | 'full';

export interface AssembledTensor {
  dtype: SafetensorsDType;
  /** Shape of what was asked: the global shape for 'full', the slice's local shape otherwise. */
  shape: number[];
  globalShape: number[];
  data: SafetensorsData;
}

interface Pending {
  want: Want;
  out?: AssembledTensor;
  /** Wanted flat range [c, d) of the global tensor. */
  range?: [number, number];
  /** Covered sub-ranges, relative to c, kept sorted and merged. */
  covered: [number, number][];
}

function addCovered(cov: [number, number][], a: number, b: number): void {
  if (a >= b) return;
  cov.push([a, b]);
  cov.sort((x, y) => x[0] - y[0]);
  let w = 0;
  for (let i = 1; i < cov.length; i++) {
    if (cov[i]![0] <= cov[w]![1]) cov[w]![1] = Math.max(cov[w]![1], cov[i]![1]);
    else cov[++w] = cov[i]!;
  }
  cov.length = w + 1;
}

function isDone(p: Pending): boolean {
  return (
    p.range !== undefined &&
    (p.range[1] === p.range[0] ||
      (p.covered.length === 1 && p.covered[0]![0] === 0 && p.covered[0]![1] === p.range[1] - p.range[0]))
  );
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function takeFrom(name: string, p: Pending, t: SafeTensor, slice: TensorSlice | undefined, where: string): void {
  const globalShape = slice ? slice.globalShape : t.shape;
  if (!p.out) {
    const range: [number, number] = p.want === 'full' ? [0, numelOf(globalShape)] : flatRangeOf(p.want);
    if (p.want !== 'full' && !sameShape(p.want.globalShape, globalShape)) {
      throw new CheckpointError(
        `tensor "${name}": asked for a slice of global shape [${p.want.globalShape.join(', ')}] but the checkpoint holds [${globalShape.join(', ')}]`,
        where,
      );
    }
    const Ctor = t.data.constructor as new (n: number) => SafetensorsData;
    p.range = range;
    p.out = {
      dtype: t.dtype,
      shape: p.want === 'full' ? [...globalShape] : localShapeOf(p.want),
      globalShape: [...globalShape],
      data: new Ctor(range[1] - range[0]),
    };
  } else if (!sameShape(p.out.globalShape, globalShape) || p.out.dtype !== t.dtype) {
    throw new CheckpointError(
      `tensor "${name}": ${where} holds it as ${t.dtype} of global shape [${globalShape.join(', ')}], another rank file as ${p.out.dtype} [${p.out.globalShape.join(', ')}]`,
      where,
    );
  }
  const [a, b] = slice ? flatRangeOf(slice) : [0, numelOf(globalShape)];
  const [c, d] = p.range!;
  const lo = Math.max(a, c);
  const hi = Math.min(b, d);
  if (lo >= hi) return;
  (p.out.data as Float32Array).set((t.data as Float32Array).subarray(lo - a, hi - a), lo - c);
  addCovered(p.covered, lo - c, hi - c);
}

function finish(pending: Map<string, Pending>, dir: string, available: () => string[]): Map<string, AssembledTensor> {
  const out = new Map<string, AssembledTensor>();
  for (const [name, p] of pending) {
    if (!p.out) {
      const names = available();
      throw new CheckpointError(
        `tensor "${name}" is in no rank file of ${dir} (it holds ${names.length} tensors, e.g. ${names.slice(0, 5).join(', ')})`,
        dir,
      );
    }
    if (!isDone(p)) {
      const [c] = p.range!;
      let at = 0;
      for (const [x, y] of p.covered) {
        if (x > at) break;
        at = y;
      }
      throw new CheckpointError(
        `tensor "${name}": elements [${c + at}, …) of the flattened global tensor are held by no rank file of ${dir}`,
        dir,
      );
    }
    out.set(name, p.out);
  }
  return out;
}

function merge(
  shards: Iterable<RankShard>,
  wants: Readonly<Record<string, Want>>,
  dir: string,
): Map<string, AssembledTensor> {
  const pending = new Map<string, Pending>(Object.entries(wants).map(([n, w]) => [n, { want: w, covered: [] }]));
  const seen = new Set<string>();
  for (const s of shards) {
    for (const [name, t] of s.tensors) {
      seen.add(name);
      const p = pending.get(name);
      if (p && !isDone(p))
        takeFrom(name, p, t, Object.hasOwn(s.slices, name) ? s.slices[name] : undefined, s.tensors.path);
    }
    if ([...pending.values()].every(isDone)) break; // later rank files hold nothing we still need
  }
  return finish(pending, dir, () => [...seen]);
}

/**
 * Loads the wanted slices from a checkpoint on disk, reading (and verifying) one rank file at a time and stopping
 * as soon as everything wanted is covered.
 */
export function loadSlices(
  dir: string,
  wants: Readonly<Record<string, Want>>,
  manifest: Manifest = readManifest(dir),
): Map<string, AssembledTensor> {
  for (const f of manifest.files) verifyFile(dir, f, 'size');
  function* shards(): Generator<RankShard> {
    for (let r = 0; r < manifest.worldSize; r++) yield readRankShard(dir, r, manifest);
  }
  return merge(shards(), wants, dir);
}

/** Full global tensors from an already-read checkpoint (all tensors, or those named). */
export function assembleTensors(ckpt: LoadedCheckpoint, names?: readonly string[]): Map<string, AssembledTensor> {
  const all = names ?? [...new Set(ckpt.shards.flatMap((s) => [...s.tensors.keys()]))];
  return merge(ckpt.shards, Object.fromEntries(all.map((n) => [n, 'full' as const])), ckpt.dir);
}
