// Full tensors from sharded ones: every FSDP unit's flat shards all_gathered over its group, and routed experts
// (each EP rank holds rows [r·L, (r+1)·L)) gathered over the EP group, cut back into tensors under torchtitan's
// names. For `moe-actors grad --ranks N` and the parity tests (full gradients, parameters after N steps).

import type { CallSite, Communicator } from '../comm/communicator.ts';
import type { MoeBuffers } from '../models/moe/layer.ts';
import type { FsdpUnitShard } from './fsdp/shard.ts';

export interface FullTensor {
  shape: readonly number[];
  data: Float32Array;
}

/** Collective over every shard's group and `ep`, in the same order on every rank. */
export async function gatherFullTensors(
  shards: Iterable<FsdpUnitShard>,
  ep: Communicator,
  biases: ReadonlyMap<number, MoeBuffers> | null,
  which: 'params' | 'grads',
  site?: CallSite,
): Promise<Map<string, FullTensor>> {
  const out = new Map<string, FullTensor>();
  for (const shard of shards) {
    const layout = shard.unit.layout;
    const local = which === 'params' ? shard.data : shard.grad;
    let full: Float32Array;
    if (shard.group.size === 1) full = local;
    else {
      full = new Float32Array(shard.shardSize * shard.group.size);
      await shard.group.allGather(local, full, { tag: `gather ${which} ${layout.id}`, site });
    }
    if (!shard.isExperts || ep.size === 1) {
      for (const e of layout.entries)
        out.set(e.name, { shape: e.globalShape, data: full.slice(e.offset, e.offset + e.numel) });
      continue;
    }
    const unitLen = layout.numel;
    const all = new Float32Array(unitLen * ep.size);
    await ep.allGather(full.slice(0, unitLen), all, { tag: `gather experts ${which} ${layout.id}`, site });
    for (const e of layout.entries) {
      const g = new Float32Array(e.numel * ep.size);
      for (let j = 0; j < ep.size; j++)
        g.set(all.subarray(j * unitLen + e.offset, j * unitLen + e.offset + e.numel), j * e.numel);
      out.set(e.name, { shape: e.globalShape, data: g });
    }
  }
  for (const [layer, b] of biases ?? []) {
    if (b.expertBias)
      out.set(`layers.${layer}.moe.expert_bias`, {
        shape: [b.expertBias.length],
        data: Float32Array.from(b.expertBias),
      });
  }
  return out;
}
