// Arithmetic on per-rank element counts (the v-collectives' counts and splits), shared by the argument checks,
// the transports and the flight-record checks so that they all agree on totals and displacements.

/** Total of `xs`; holes in a sparse array count as absent (Array.prototype.reduce skips them). */
export const sum = (xs: readonly number[] | Int32Array): number => (xs as readonly number[]).reduce((a, b) => a + b, 0);

/** Exclusive prefix sums: the displacement of each rank's block. */
export const prefix = (xs: readonly number[]): number[] => {
  const out = new Array<number>(xs.length);
  let acc = 0;
  for (let i = 0; i < xs.length; i++) {
    out[i] = acc;
    acc += xs[i]!;
  }
  return out;
};
