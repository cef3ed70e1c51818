// The reduction contract (src/comm/reduce.ts): rank order, rounding to the dtype after every step, premul_sum
// rounding each product, int32 wrap-around, NaN propagation in max, and the float-only ops.
import { describe, expect, it } from 'vitest';
import { reduceDefinedOn, reduceInto } from '../../src/comm/reduce.ts';

describe('reduceInto', () => {
  it('float32 sum is the rank-order sum rounded after every addition (not the exact or reordered sum)', () => {
    // float32 spacing at 1e8 is 8: in rank order each +3 is lost against 1e8; in reverse order 3+3+3+3 = 12 survives.
    const xs = [
      new Float32Array([1e8]),
      new Float32Array([3]),
      new Float32Array([3]),
      new Float32Array([3]),
      new Float32Array([3]),
    ];
    const out = new Float32Array(1);
    reduceInto(out, xs, [0, 0, 0, 0, 0], 1, { op: 'sum' });
    expect(out[0]).toBe(1e8);
    reduceInto(out, [...xs].reverse(), [0, 0, 0, 0, 0], 1, { op: 'sum' });
    expect(out[0]).toBe(1e8 + 16);
  });

  it('premul_sum rounds every product to float32 before adding', () => {
    const x = Math.fround(1 / 3);
    const out = new Float32Array(1);
    reduceInto(out, [new Float32Array([x]), new Float32Array([x])], [0, 0], 1, { op: 'premul_sum', factor: 0.1 });
    expect(out[0]).toBe(Math.fround(Math.fround(0.1 * x) + Math.fround(0.1 * x)));
  });

  it('avg divides the rank-order sum once; max propagates NaN; offsets select blocks; out may alias input 0', () => {
    const a = new Float64Array([1, 2, 3, 4]);
    const b = new Float64Array([10, 20, 30, 40]);
    const out = new Float64Array(2);
    reduceInto(out, [a, b], [2, 2], 2, { op: 'avg' });
    expect([...out]).toEqual([16.5, 22]);
    reduceInto(out, [a, b], [0, 0], 2, { op: 'max' });
    expect([...out]).toEqual([10, 20]);
    const n = new Float32Array([1, NaN]);
    reduceInto(n, [n, new Float32Array([NaN, 5])], [0, 0], 2, { op: 'max' });
    expect(n[0]).toBeNaN();
    expect(n[1]).toBeNaN();
  });

  it('int32 sums wrap around like C; avg and premul_sum are refused on int32', () => {
    const out = new Int32Array(1);
    reduceInto(out, [new Int32Array([2 ** 31 - 1]), new Int32Array([1])], [0, 0], 1, { op: 'sum' });
    expect(out[0]).toBe(-(2 ** 31));
    expect(reduceDefinedOn({ op: 'avg' }, out)).toBe(false);
    expect(reduceDefinedOn({ op: 'premul_sum', factor: 2 }, out)).toBe(false);
    expect(() => reduceInto(out, [out], [0], 1, { op: 'avg' })).toThrow(
      /defined on float32\/float64 only, got Int32Array/,
    );
  });
});
