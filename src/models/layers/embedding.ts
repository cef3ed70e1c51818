// nn.Embedding(V, D) without scaling: out[n] = table[ids[n]].
import type { Runtime } from '../runtime.ts';

// table (V,D), ids (N) → out (N,D) (caller owns)
export function embeddingForward(
  rt: Runtime,
  table: Float32Array,
  ids: Int32Array,
  N: number,
  D: number,
): Float32Array {
  const V = table.length / D;
  for (let n = 0; n < N; n++) {
    const id = ids[n]!;
    if (!(id >= 0 && id < V)) {
      throw new RangeError(
        `token id ${id} at position ${n} is outside the vocabulary [0, ${V}) (vocab_size = ${V}); check the tokenizer and model.args.vocab_size`,
      );
    }
  }
  const out = rt.pool.get(N * D);
  rt.k.embeddingFwd(table, ids, out, N, D);
  return out;
}

// dout (N,D), ids (N) → dtable (V,D) +=
export function embeddingBackward(
  rt: Runtime,
  dout: Float32Array,
  ids: Int32Array,
  dtable: Float32Array,
  N: number,
  D: number,
): void {
  rt.k.embeddingBwd(dout, ids, dtable, N, D);
}
