// Checkpoints: one safetensors file + one JSON file per rank in step-<n>/, manifest.json written last with sizes
// and SHA-256 of every file; listing with reasons for partial ones; verified reads; keep_latest_k pruning;
// re-sharding onto another mesh on load.
export {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  CheckpointError,
  MANIFEST_NAME,
  stepDirName,
  type CheckpointMeta,
  type FileEntry,
  type Manifest,
} from './format.ts';
export {
  commitManifest,
  stepDir,
  waitForCommit,
  waitForRankFiles,
  writeCheckpoint,
  writeRankShard,
  type RankPayload,
} from './write.ts';
export { StagingArena } from './staging.ts';
export {
  latestComplete,
  listCheckpoints,
  type CheckpointListing,
  type CompleteCheckpoint,
  type PartialCheckpoint,
} from './list.ts';
export { readCheckpoint, readRankShard, type LoadedCheckpoint, type RankShard } from './read.ts';
export { readManifest, verifyCheckpoint, type VerifyLevel } from './verify.ts';
export { assembleTensors, loadSlices, type AssembledTensor, type Want } from './reshard.ts';
export { flatRangeOf, localShapeOf, type TensorSlice } from './slices.ts';
export { pruneCheckpoints, type PruneResult } from './prune.ts';
export { configHash } from './config-hash.ts';
