// Shapes stay plain number arrays next to flat Float32Array storage (an FSDP unit keeps every parameter as a view
// into one buffer), so the element count is the one shape helper needed.

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`invalid dimension ${d} in shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}
