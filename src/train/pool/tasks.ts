// What the side pool's threads do. Each task is plain data (structured-clonable; tensors on SharedArrayBuffers
// cross without a copy) and its result too, so the same task runs in a local Piscina or through the launcher's
// pool of a threads run.

import { writeRankShard, type RankPayload } from '../checkpoint/write.ts';
import type { FileEntry } from '../checkpoint/format.ts';
import type { SafeTensorInput } from '../../models/safetensors.ts';
import { HfTokenizer } from '../data/hf-tokenizer.ts';

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

/** [BOS] + ids + [EOS] of each text under a tokenizer.json (documents prefetched for a rank's data loader). */
export interface EncodeTask {
  kind: 'encode';
  tokenizerFile: string;
  texts: string[];
}

export type PoolTask = WriteShardTask | WarmTask | EncodeTask;

interface Results {
  'write-shard': FileEntry[];
  warm: number;
  encode: Int32Array[];
}

/** Tokenizers this thread has loaded, by file (a run uses one; parsing tokenizer.json per task would dominate). */
const tokenizers = new Map<string, HfTokenizer>();
export type PoolTaskResult<K extends PoolTask['kind']> = Results[K];

export default function runTask(task: PoolTask): unknown {
  switch (task.kind) {
    case 'write-shard':
      return writeRankShard(task.dir, task.rank, {
        tensors: new Map(task.tensors),
        slices: task.slices,
        extras: task.extras,
      });
    case 'encode': {
      let tok = tokenizers.get(task.tokenizerFile);
      if (!tok) tokenizers.set(task.tokenizerFile, (tok = HfTokenizer.load(task.tokenizerFile)));
      return task.texts.map((t) => tok.encode(t, { bos: true, eos: true }));
    }
    case 'warm':
      return process.pid;
    default:
      throw new Error(`side pool: unknown task kind "${(task as { kind: string }).kind}"`);
  }
}
