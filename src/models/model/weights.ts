// Full-model weights ⇄ safetensors under torchtitan's state_dict names (scripts/reference/NAMES.md): every
// parameter plus the persistent buffer layers.N.moe.expert_bias. Loading is strict — a missing, extra,
// wrong-dtype or wrong-shaped tensor is an error naming it — because a silently skipped tensor trains garbage.
// An EP shard loads its own experts' rows out of the full tensors.

import { writeSafetensors, type SafeTensorInput, type SafetensorsFile } from '../safetensors.ts';
import type { Model } from './model.ts';

const fmt = (s: readonly number[]): string => `(${s.join(', ')})`;

function expectedTensors(model: Model): Map<string, readonly number[]> {
  const out = new Map<string, readonly number[]>();
  for (const u of model.units.values()) for (const e of u.layout.entries) out.set(e.name, e.globalShape);
  for (const [layer, b] of model.moeBuffers)
    if (b.expertBias) out.set(`layers.${layer}.moe.expert_bias`, [b.expertBias.length]);
  return out;
}

/** Copies every tensor of `file` into the model (params into their units, expert_bias into its buffer). */
export function loadWeights(model: Model, file: SafetensorsFile): void {
  const expected = expectedTensors(model);
  const missing = [...expected.keys()].filter((n) => !file.has(n));
  const extra = [...file.keys()].filter((n) => !expected.has(n));
  const where = file.path;
  if (missing.length) throw new Error(`${where}: missing tensor(s) for this model: ${missing.join(', ')}`);
  if (extra.length) {
    throw new Error(
      `${where}: tensor(s) this model does not have: ${extra.join(', ')} (wrong model config or flavor?)`,
    );
  }
  for (const [name, shape] of expected) {
    const t = file.get(name)!;
    if (t.dtype !== 'F32') throw new Error(`${where}: tensor ${name} is ${t.dtype}, expected F32`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`${where}: tensor ${name} has shape ${fmt(t.shape)}, the model expects ${fmt(shape)}`);
    }
  }
  for (const u of model.units.values()) {
    for (const e of u.layout.entries) {
      const src = file.get(e.name)!.data as Float32Array;
      if (e.expert && u.layout.experts) {
        const per = e.numel / e.shape[0]!;
        const s = u.layout.experts.start * per;
        u.p(e.name).set(src.subarray(s, s + e.numel));
      } else u.p(e.name).set(src);
    }
  }
  for (const [layer, b] of model.moeBuffers) {
    if (b.expertBias) b.expertBias.set(file.get(`layers.${layer}.moe.expert_bias`)!.data as Float32Array);
  }
}

/** The full state (params + expert_bias) as safetensors inputs; the model must hold every expert. */
export function stateDict(model: Model): Record<string, SafeTensorInput> {
  if (model.experts && model.moeLayers().some((m) => !m.holdsAllExperts)) {
    throw new Error('stateDict: this model is an EP shard; gather the experts of every rank to save a full model');
  }
  const out: Record<string, SafeTensorInput> = {};
  for (const u of model.units.values()) {
    for (const e of u.layout.entries) out[e.name] = { shape: e.shape, data: Float32Array.from(u.p(e.name)) };
  }
  for (const [layer, b] of model.moeBuffers) {
    if (b.expertBias)
      out[`layers.${layer}.moe.expert_bias`] = { shape: [b.expertBias.length], data: Float32Array.from(b.expertBias) };
  }
  return out;
}

export function saveWeights(model: Model, path: string, metadata?: Record<string, string>): void {
  writeSafetensors(path, stateDict(model), metadata);
}
