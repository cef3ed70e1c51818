// A Float32 tensor: a shape over a contiguous row-major Float32Array (possibly a view into a larger buffer,
// e.g. one parameter inside an FSDP unit's flat storage).

export class Tensor {
  constructor(
    readonly data: Float32Array,
    readonly shape: readonly number[],
  ) {
    const n = numelOf(shape);
    if (n !== data.length) {
      throw new Error(`Tensor: shape [${shape.join(', ')}] needs ${n} elements, storage has ${data.length}`);
    }
  }

  get numel(): number {
    return this.data.length;
  }

  /** Same storage, another shape with the same number of elements. */
  view(shape: readonly number[]): Tensor {
    return new Tensor(this.data, shape);
  }

  static zeros(shape: readonly number[]): Tensor {
    return new Tensor(new Float32Array(numelOf(shape)), shape);
  }

  static from(data: ArrayLike<number>, shape: readonly number[]): Tensor {
    return new Tensor(Float32Array.from(data), shape);
  }
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`invalid dimension ${d} in shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}

export function shapeEquals(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
