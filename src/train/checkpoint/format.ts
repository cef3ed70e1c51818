// On-disk layout of a checkpoint (format version 1):
//
//   <folder>/step-<n>/
//     rank<r>.safetensors   tensors of rank r under torchtitan names (params, optim.exp_avg.<name>,
//                           optim.exp_avg_sq.<name>, buffers — the caller decides); the safetensors __metadata__
//                           says which slice of each global tensor the rank holds (see reshard.ts)
//     rank<r>.json          JSON extras of rank r (RNG and data-loader state, LR scheduler step, …)
//     manifest.json         written LAST, by one rank, after every rank has finished: step, config hash, mesh
//                           degrees, world size, and every file with its size and SHA-256
//
// Every file is written under a temporary name, fsynced and renamed, so a file either exists whole or not at all.
// A checkpoint is complete only when manifest.json exists and every file it lists has its size and checksum.
// While ranks write, each leaves rank<r>.done.json (its files' sizes and checksums) for the committing rank to
// collect; the commit removes them.

export const CHECKPOINT_FORMAT = 'moe-actors/checkpoint';
export const CHECKPOINT_VERSION = 1;
export const MANIFEST_NAME = 'manifest.json';

export const stepDirName = (step: number): string => `step-${step}`;
export const shardFileName = (rank: number): string => `rank${rank}.safetensors`;
export const extrasFileName = (rank: number): string => `rank${rank}.json`;
export const doneFileName = (rank: number): string => `rank${rank}.done.json`;

export const STEP_DIR_RE = /^step-(\d+)$/;
export const RANK_FILE_RE = /^rank(\d+)\.(safetensors|json|done\.json)$/;

export interface FileEntry {
  /** File name inside the step folder. */
  name: string;
  rank: number;
  bytes: number;
  sha256: string;
}

/** What the caller says about a checkpoint when committing it. */
export interface CheckpointMeta {
  step: number;
  /** Hash of the settings that must match on resume (see configHash). */
  configHash: string;
  /** Parallelism degrees the checkpoint was written with, e.g. { dp_replicate: 1, dp_shard: 4, ep: 4 }. */
  mesh: Record<string, number>;
  worldSize: number;
  /** Anything else worth keeping next to the files (free-form JSON). */
  info?: Record<string, unknown>;
}

export interface Manifest extends CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  createdAt: string;
  files: FileEntry[];
}

export class CheckpointError extends Error {
  constructor(
    message: string,
    /** The file (or folder) at fault. */
    readonly path: string,
  ) {
    super(message);
    this.name = 'CheckpointError';
  }
}
