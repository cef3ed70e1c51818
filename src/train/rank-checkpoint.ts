// What a rank puts into a checkpoint and takes back out: its FSDP shards of every parameter and of the AdamW
// moments, cut along torchtitan's parameter names (each tensor's part of the shard, as a flat range of the global
// tensor), the expert biases (replicated), the optimizer step count, the LR scheduler index and the data-loader
// position. Because every tensor is stored as "these elements of the global tensor", a checkpoint loads onto any
// mesh (EP 4 → EP 2 → 1, FSDP ↔ HSDP): each rank asks for exactly the elements its own shards cover.

import type { RankHost } from '../actors/rank-host.ts';
import type { FsdpUnitShard } from '../actors/fsdp/shard.ts';
import type { SafeTensorInput } from '../models/safetensors.ts';
import { loadSlices, type TensorSlice, type Want } from './checkpoint/index.ts';

interface Piece {
  name: string;
  /** Range within the shard. */
  shardFrom: number;
  shardTo: number;
  slice: TensorSlice;
}

/** The parts of the unit's tensors inside this rank's shard, with their flat ranges in the global tensors. */
function piecesOf(shard: FsdpUnitShard, groupRank: number): Piece[] {
  const lo = groupRank * shard.shardSize;
  const hi = lo + shard.shardSize;
  const layout = shard.unit.layout;
  const expertStart = layout.experts?.start ?? 0;
  const out: Piece[] = [];
  for (const e of layout.entries) {
    const a = Math.max(lo, e.offset);
    const b = Math.min(hi, e.offset + e.numel);
    if (a >= b) continue;
    // Routed experts hold rows [start, start + L) of the global tensor: shift by those rows' elements.
    const base = e.expert ? expertStart * (e.numel / e.shape[0]!) : 0;
    out.push({
      name: e.name,
      shardFrom: a - lo,
      shardTo: b - lo,
      slice: { globalShape: [...e.globalShape], flat: [base + a - e.offset, base + b - e.offset] },
    });
  }
  return out;
}

export interface RankCheckpointState {
  tensors: Map<string, SafeTensorInput>;
  slices: Record<string, TensorSlice>;
  extras: Record<string, unknown>;
}

/** Copies a tensor's current values somewhere the training may not touch until the checkpoint is written. */
export type StageCopy = (src: Float32Array) => Float32Array;

/** Everything of this rank a checkpoint holds, copied (by default into fresh arrays; an async write stages them). */
export function captureRankState(
  host: RankHost,
  extras: Record<string, unknown>,
  copy: StageCopy = (s) => s.slice(),
): RankCheckpointState {
  const tensors = new Map<string, SafeTensorInput>();
  const slices: Record<string, TensorSlice> = {};
  const optimSteps: Record<string, number> = {};
  for (const shard of host.shards.values()) {
    const st = host.optimizer.stateOf(shard.id);
    optimSteps[shard.id] = st.step;
    for (const p of piecesOf(shard, shard.group.rank)) {
      const len = p.shardTo - p.shardFrom;
      const shape = [len];
      tensors.set(p.name, { shape, data: copy(shard.paramShard.subarray(p.shardFrom, p.shardTo)) });
      tensors.set(`optim.exp_avg.${p.name}`, { shape, data: copy(st.m.subarray(p.shardFrom, p.shardTo)) });
      tensors.set(`optim.exp_avg_sq.${p.name}`, { shape, data: copy(st.v.subarray(p.shardFrom, p.shardTo)) });
      slices[p.name] = p.slice;
      slices[`optim.exp_avg.${p.name}`] = p.slice;
      slices[`optim.exp_avg_sq.${p.name}`] = p.slice;
    }
  }
  // Replicated on every rank; written once (by rank 0) to keep the checkpoint small.
  if (host.rank === 0) {
    for (const [layer, b] of host.model.moeBuffers) {
      if (b.expertBias)
        tensors.set(`layers.${layer}.moe.expert_bias`, { shape: [b.expertBias.length], data: copy(b.expertBias) });
    }
  }
  return { tensors, slices, extras: { ...extras, optimSteps, schedulerIndex: host.scheduler.index } };
}

/**
 * Loads this rank's shards (params and AdamW moments), the expert biases, optimizer steps and scheduler index
 * from a checkpoint written on any mesh. Returns the rank's extras (from the same rank index when it exists).
 */
/**
 * Restores weights, AdamW moments and step counts, and expert biases; the LR schedule's position too when
 * `schedule` (a resumed run). A new run initialised from another run's checkpoint starts its own schedule: that
 * checkpoint's index may lie past this run's last step, where the decay formula is meaningless (negative or NaN lr).
 */
export function restoreRankState(
  host: RankHost,
  dir: string,
  extras: Record<string, unknown> | null,
  { schedule }: { schedule: boolean },
): void {
  const wants: Record<string, Want> = {};
  const targets: { name: string; shard: FsdpUnitShard; piece: Piece; what: 'p' | 'm' | 'v' }[] = [];
  for (const shard of host.shards.values()) {
    for (const p of piecesOf(shard, shard.group.rank)) {
      for (const [prefix, what] of [
        ['', 'p'],
        ['optim.exp_avg.', 'm'],
        ['optim.exp_avg_sq.', 'v'],
      ] as const) {
        wants[prefix + p.name] = p.slice;
        targets.push({ name: prefix + p.name, shard, piece: p, what });
      }
    }
  }
  for (const [layer, b] of host.model.moeBuffers) if (b.expertBias) wants[`layers.${layer}.moe.expert_bias`] = 'full';
  const got = loadSlices(dir, wants);
  for (const t of targets) {
    const src = got.get(t.name)!.data as Float32Array;
    const st = host.optimizer.stateOf(t.shard.id);
    const dst = t.what === 'p' ? t.shard.paramShard : t.what === 'm' ? st.m : st.v;
    dst.set(src, t.piece.shardFrom);
  }
  for (const [layer, b] of host.model.moeBuffers) {
    if (b.expertBias) b.expertBias.set(got.get(`layers.${layer}.moe.expert_bias`)!.data as Float32Array);
    b.tokensPerExpert.fill(0);
  }
  const steps = (extras?.optimSteps ?? {}) as Record<string, number>;
  const anyStep = Object.values(steps)[0] ?? 0;
  for (const shard of host.shards.values()) host.optimizer.stateOf(shard.id).step = steps[shard.id] ?? anyStep;
  if (schedule && typeof extras?.schedulerIndex === 'number') host.scheduler.restore(extras.schedulerIndex);
}
