// What the side pool's threads do. Each task is plain data (structured-clonable; tensors on SharedArrayBuffers
// cross without a copy) and its result too, so the same task runs in a local Piscina or through the launcher's
// pool of a threads run.

import { writeRankShard, type RankPayload } from '../checkpoint/write.ts';
import type { FileEntry } from '../checkpoint/format.ts';
import type { SafeTensorInput } from '../../models/safetensors.ts';

export interface WriteShardTask {
  kind: 'write-shard';
  dir: string;
  rank: number;
  tensors: [string, SafeTensorInput][];
  slices: RankPayload['slices'];
  extras: RankPayload['extras'];
}

/** Loads the modules tasks need, so the first real task does not pay for the thread's start-up. */
export interface WarmTask {
  kind: 'warm';
}

export type PoolTask = WriteShardTask | WarmTask;

interface Results {
  'write-shard': FileEntry[];
  warm: number;
}
export type PoolTaskResult<K extends PoolTask['kind']> = Results[K];

export default function runTask(task: PoolTask): unknown {
  switch (task.kind) {
    case 'write-shard':
      return writeRankShard(task.dir, task.rank, { tensors: new Map(task.tensors), slices: task.slices, extras: task.extras });
    case 'warm':
      return process.pid;
    default:
      throw new Error(`side pool: unknown task kind "${(task as { kind: string }).kind}"`);
  }
}
