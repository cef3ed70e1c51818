// Auxiliary-loss-free load balancing (torchtitan-semantics.md §3.4), the optimizer pre-hook's math for one MoE layer. The SUM
// all-reduce of the counts over the batch×cp ranks sits between halveCheckpointedCounts and expertBiasUpdate and is
// the caller's (distributed) business; on one rank there is nothing to reduce.

const f = Math.fround;

/** Undo the double count of a checkpoint-wrapped block (its MoE forward ran twice): t ← floor(t / 2), in place. */
export function halveCheckpointedCounts(tokensPerExpert: Float32Array): void {
  for (let e = 0; e < tokensPerExpert.length; e++) tokensPerExpert[e] = Math.floor(tokensPerExpert[e]! / 2);
}

/**
 * bias += Δ − mean(Δ) with Δ = coeff · sign(mean(t) − t), in float32 as torch: under-loaded experts gain, over-loaded
 * ones lose, and Σ bias is unchanged. `counts` are the (all-reduced) tokens per expert of this layer.
 */
export function expertBiasUpdate(counts: Float32Array, bias: Float32Array, coeff: number): void {
  const E = counts.length;
  if (bias.length !== E) throw new Error(`expertBiasUpdate: ${E} counts for ${bias.length} expert biases`);
  let sum = 0;
  for (let e = 0; e < E; e++) sum += counts[e]!;
  const mean = f(sum / E);
  const c = f(coeff);
  const delta = new Float32Array(E);
  let dsum = 0;
  for (let e = 0; e < E; e++) {
    delta[e] = f(c * Math.sign(f(mean - counts[e]!)));
    dsum += delta[e]!;
  }
  const dmean = f(dsum / E);
  for (let e = 0; e < E; e++) bias[e] = f(bias[e]! + f(delta[e]! - dmean));
}
