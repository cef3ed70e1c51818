// Which part of a global tensor a rank's file holds, so a checkpoint written on one mesh loads onto another
// (EP 4 → EP 2 or 1, a different FSDP degree, HSDP ↔ FSDP).
//
// Two kinds of slice, both expressed against the tensor's global (unsharded) shape:
//   { globalShape, dim0: [start, end) }  rows start..end-1 along dim 0 (EP: experts; torchtitan's Shard(0));
//                                        the local tensor has shape [end-start, ...globalShape[1:]];
//   { globalShape, flat: [start, end) }  elements start..end-1 of the row-major flattened tensor (an FSDP flat
//                                        shard, possibly uneven or empty); the local tensor is 1-D.
// A tensor without a slice entry is a full replica. Both kinds reduce to a flat element range, which is all
// re-assembly needs. The map is stored as JSON in the safetensors __metadata__ under SLICES_KEY.

export type TensorSlice =
  | { globalShape: number[]; dim0: [number, number] }
  | { globalShape: number[]; flat: [number, number] };

export const SLICES_KEY = 'moe_actors.slices';

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** [start, end) in elements of the flattened global tensor. */
export function flatRangeOf(s: TensorSlice): [number, number] {
  if ('flat' in s) return [s.flat[0], s.flat[1]];
  const row = numelOf(s.globalShape.slice(1));
  return [s.dim0[0] * row, s.dim0[1] * row];
}

/** The local shape a slice implies. */
export function localShapeOf(s: TensorSlice): number[] {
  if ('flat' in s) return [s.flat[1] - s.flat[0]];
  return [s.dim0[1] - s.dim0[0], ...s.globalShape.slice(1)];
}

/** Checks a slice against the tensor it describes; returns an error text or null. */
export function checkSlice(name: string, s: TensorSlice, localShape: readonly number[]): string | null {
  const g = s.globalShape;
  if (!Array.isArray(g) || !g.every((d) => Number.isSafeInteger(d) && d >= 0))
    return `tensor "${name}": invalid globalShape ${JSON.stringify(g)}`;
  const range = 'flat' in s ? s.flat : 'dim0' in s ? s.dim0 : null;
  if (!range || range.length !== 2 || !range.every((v) => Number.isSafeInteger(v)))
    return `tensor "${name}": a slice needs dim0: [start, end] or flat: [start, end]`;
  const limit = 'flat' in s ? numelOf(g) : g[0];
  if (limit === undefined) return `tensor "${name}": a dim0 slice needs a tensor with at least one dimension`;
  if (!(0 <= range[0] && range[0] <= range[1] && range[1] <= limit)) {
    return `tensor "${name}": slice [${range[0]}, ${range[1]}) is outside [0, ${limit}) of global shape [${g.join(', ')}]`;
  }
  const want = localShapeOf(s);
  if (want.length !== localShape.length || want.some((d, i) => d !== localShape[i])) {
    return `tensor "${name}": local shape [${localShape.join(', ')}] does not match its slice (expected [${want.join(', ')}])`;
  }
  return null;
}

export function parseSlices(metadata: Record<string, string>, where: string): Record<string, TensorSlice> {
  const raw = metadata[SLICES_KEY];
  if (raw === undefined) return {};
  try {
    const v = JSON.parse(raw) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, TensorSlice>;
  } catch (e) {
    throw new Error(`${where}: __metadata__["${SLICES_KEY}"] is not valid slice JSON (${(e as Error).message})`);
  }
}
