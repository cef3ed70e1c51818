// Writing a checkpoint from N ranks:
//
//   every rank:        writeRankShard(stepDir, rank, payload)      its own files, temp + rename each
//   (caller):          barrier on the world communicator
//   one rank (rank 0): commitManifest(stepDir, meta)               manifest.json last; the checkpoint is complete
//
// The ranks need not exchange anything: each leaves rank<r>.done.json with its files' sizes and checksums, and
// the commit reads those. That works the same for worker threads and for MPI processes on a shared filesystem.
// writeCheckpoint() does all of it in one process (tests, single-rank runs, tools).

import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { SafeTensorInput } from '../../models/safetensors.ts';
import { fsyncDir, sha256Hex, TEMP_SUFFIX, unlinkQuiet, writeFileAtomic } from './atomic.ts';
import {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  CheckpointError,
  doneFileName,
  extrasFileName,
  MANIFEST_NAME,
  RANK_FILE_RE,
  shardFileName,
  stepDirName,
  type CheckpointMeta,
  type FileEntry,
  type Manifest,
} from './format.ts';
import { checkSlice, SLICES_KEY, type TensorSlice } from './slices.ts';
import { writeSafetensorsStreaming } from './st-stream.ts';

export interface RankPayload {
  /** Tensors under torchtitan names. */
  tensors: ReadonlyMap<string, SafeTensorInput> | Readonly<Record<string, SafeTensorInput>>;
  /** For tensors this rank holds only part of: which part. Tensors not listed are full replicas. */
  slices?: Readonly<Record<string, TensorSlice>>;
  /** JSON-serializable extras (RNG, data-loader state, LR scheduler step, …). */
  extras?: Readonly<Record<string, unknown>>;
}

export function stepDir(folder: string, step: number): string {
  return join(folder, stepDirName(step));
}

/** Writes rank `rank`'s files into `dir` (the step folder). Returns the entries the manifest will list. */
export function writeRankShard(dir: string, rank: number, payload: RankPayload): FileEntry[] {
  if (!(Number.isInteger(rank) && rank >= 0))
    throw new RangeError(`writeRankShard: rank must be an integer ≥ 0 (got ${rank})`);
  mkdirSync(dir, { recursive: true });
  // A manifest left from an earlier write of this step would vouch for files we are about to replace.
  unlinkQuiet(join(dir, MANIFEST_NAME));
  unlinkQuiet(join(dir, doneFileName(rank)));

  const tensors = payload.tensors instanceof Map ? payload.tensors : new Map(Object.entries(payload.tensors));
  const slices = payload.slices ?? {};
  for (const [name, s] of Object.entries(slices)) {
    const t = tensors.get(name);
    if (!t) throw new CheckpointError(`rank ${rank}: a slice is given for "${name}" but there is no such tensor`, dir);
    const err = checkSlice(name, s, t.shape);
    if (err) throw new CheckpointError(`rank ${rank}: ${err}`, dir);
  }
  const metadata: Record<string, string> = { format: `${CHECKPOINT_FORMAT}@${CHECKPOINT_VERSION}`, rank: String(rank) };
  if (Object.keys(slices).length) metadata[SLICES_KEY] = JSON.stringify(slices);

  const extrasBytes = new TextEncoder().encode(JSON.stringify(payload.extras ?? {}) + '\n');
  const shard = writeSafetensorsStreaming(join(dir, shardFileName(rank)), tensors, metadata);
  writeFileAtomic(join(dir, extrasFileName(rank)), extrasBytes);
  const entries: FileEntry[] = [
    { name: shardFileName(rank), rank, ...shard },
    { name: extrasFileName(rank), rank, bytes: extrasBytes.length, sha256: sha256Hex(extrasBytes) },
  ];
  writeFileAtomic(join(dir, doneFileName(rank)), new TextEncoder().encode(JSON.stringify(entries)));
  return entries;
}

function readDone(dir: string, rank: number): FileEntry[] {
  const p = join(dir, doneFileName(rank));
  let text: string;
  try {
    text = readFileSync(p, 'utf8');
  } catch {
    throw new CheckpointError(
      `cannot commit ${dir}: rank ${rank} has not finished writing (${doneFileName(rank)} is missing). ` +
        'Call commitManifest only after every rank returned from writeRankShard (barrier), with the right worldSize.',
      p,
    );
  }
  const entries = JSON.parse(text) as FileEntry[];
  for (const e of entries) {
    let size: number;
    try {
      size = statSync(join(dir, e.name)).size;
    } catch {
      throw new CheckpointError(`cannot commit ${dir}: ${e.name} of rank ${rank} is missing`, join(dir, e.name));
    }
    if (size !== e.bytes)
      throw new CheckpointError(
        `cannot commit ${dir}: ${e.name} has ${size} bytes, rank ${rank} wrote ${e.bytes}`,
        join(dir, e.name),
      );
  }
  return entries;
}

/**
 * Makes the checkpoint in `dir` complete: collects every rank's file list, writes manifest.json (last, atomically),
 * then removes the per-rank markers and leftovers of earlier attempts (temp files, files of ranks ≥ worldSize).
 */
export function commitManifest(dir: string, meta: CheckpointMeta): Manifest {
  if (!(Number.isInteger(meta.worldSize) && meta.worldSize >= 1))
    throw new RangeError(`commitManifest: worldSize must be ≥ 1 (got ${meta.worldSize})`);
  const files: FileEntry[] = [];
  for (let r = 0; r < meta.worldSize; r++) files.push(...readDone(dir, r));
  fsyncDir(dir);
  const manifest: Manifest = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    step: meta.step,
    configHash: meta.configHash,
    mesh: { ...meta.mesh },
    worldSize: meta.worldSize,
    createdAt: new Date().toISOString(),
    ...(meta.info ? { info: meta.info } : {}),
    files,
  };
  writeFileAtomic(join(dir, MANIFEST_NAME), new TextEncoder().encode(JSON.stringify(manifest, null, 1) + '\n'));
  fsyncDir(dir);
  const listed = new Set(files.map((f) => f.name));
  for (const name of readdirSync(dir)) {
    const m = RANK_FILE_RE.exec(name);
    if ((m && !listed.has(name)) || (name.startsWith('.') && name.endsWith(TEMP_SUFFIX))) unlinkQuiet(join(dir, name));
  }
  return manifest;
}

/**
 * Waits until every rank of `worldSize` has left its done marker in `dir` (an async checkpoint: rank 0 commits when
 * all ranks' pool writes finished, without a collective that would have to sit at the same point of every rank's
 * step). The caller must make sure no marker is left from an earlier, crashed write of the same step.
 */
export interface WaitOptions {
  timeoutMs: number;
  pollMs?: number;
  /** Stops the wait (the rank failed for another reason): the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

export async function waitForRankFiles(
  dir: string,
  worldSize: number,
  { timeoutMs, pollMs = 5, signal }: WaitOptions,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const missing = () =>
    Array.from({ length: worldSize }, (_, r) => r).filter((r) => !existsSync(join(dir, doneFileName(r))));
  for (;;) {
    const left = missing();
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      throw new CheckpointError(
        `cannot commit ${dir}: after ${(timeoutMs / 1000).toFixed(0)} s rank 0 still waits for the files of rank${left.length > 1 ? 's' : ''} ${left.join(', ')} ` +
          `(${left.map(doneFileName).join(', ')} missing); a rank's write failed or its filesystem is that slow ([comm] init_timeout_seconds bounds this wait)`,
        dir,
      );
    }
    signal?.throwIfAborted();
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/**
 * Waits until `dir` holds its manifest (an async checkpoint: a rank starts writing the next checkpoint only once
 * this one is committed, so a kill at any moment leaves the previous checkpoint complete).
 */
export async function waitForCommit(dir: string, { timeoutMs, pollMs = 5, signal }: WaitOptions): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(join(dir, MANIFEST_NAME))) {
    if (Date.now() > deadline) {
      throw new CheckpointError(
        `${dir} was not committed within ${(timeoutMs / 1000).toFixed(0)} s: this rank's files are written, rank 0 has not written ${MANIFEST_NAME} ([comm] init_timeout_seconds bounds this wait)`,
        dir,
      );
    }
    signal?.throwIfAborted();
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** All ranks' payloads from one process (payloads[r] is rank r's): write them, then commit. Returns the step folder. */
export function writeCheckpoint(
  folder: string,
  step: number,
  payloads: readonly RankPayload[],
  meta: Omit<CheckpointMeta, 'step' | 'worldSize'>,
): string {
  const dir = stepDir(folder, step);
  payloads.forEach((p, r) => writeRankShard(dir, r, p));
  commitManifest(dir, { ...meta, step, worldSize: payloads.length });
  return dir;
}
