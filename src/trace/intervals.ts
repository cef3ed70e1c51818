// Sets of time intervals as sorted, disjoint [start, end) pairs in a flat array: [s0, e0, s1, e1, …].
// The summaries (compute, comm, overlap, idle) are unions, intersections and differences of these.

export type IntervalSet = number[];

/** Union of arbitrary (possibly overlapping, unsorted) intervals given as [start, end] pairs. */
export function unionOf(pairs: readonly (readonly [number, number])[]): IntervalSet {
  const sorted = pairs.filter(([s, e]) => e > s).sort((a, b) => a[0] - b[0]);
  const out: IntervalSet = [];
  for (const [s, e] of sorted) {
    const n = out.length;
    if (n > 0 && s <= out[n - 1]!) {
      if (e > out[n - 1]!) out[n - 1] = e;
    } else out.push(s, e);
  }
  return out;
}

export function union(a: IntervalSet, b: IntervalSet): IntervalSet {
  const pairs: [number, number][] = [];
  for (let i = 0; i < a.length; i += 2) pairs.push([a[i]!, a[i + 1]!]);
  for (let i = 0; i < b.length; i += 2) pairs.push([b[i]!, b[i + 1]!]);
  return unionOf(pairs);
}

export function intersect(a: IntervalSet, b: IntervalSet): IntervalSet {
  const out: IntervalSet = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const s = Math.max(a[i]!, b[j]!);
    const e = Math.min(a[i + 1]!, b[j + 1]!);
    if (e > s) out.push(s, e);
    if (a[i + 1]! < b[j + 1]!) i += 2;
    else j += 2;
  }
  return out;
}

/** a minus b. */
export function subtract(a: IntervalSet, b: IntervalSet): IntervalSet {
  const out: IntervalSet = [];
  let j = 0;
  for (let i = 0; i < a.length; i += 2) {
    let s = a[i]!;
    const e = a[i + 1]!;
    while (j < b.length && b[j + 1]! <= s) j += 2;
    let k = j;
    while (k < b.length && b[k]! < e) {
      if (b[k]! > s) out.push(s, b[k]!);
      s = Math.max(s, b[k + 1]!);
      if (s >= e) break;
      k += 2;
    }
    if (s < e) out.push(s, e);
  }
  return out;
}

export function length(a: IntervalSet): number {
  let t = 0;
  for (let i = 0; i < a.length; i += 2) t += a[i + 1]! - a[i]!;
  return t;
}

/** Clips a set to [lo, hi]. */
export function clip(a: IntervalSet, lo: number, hi: number): IntervalSet {
  return intersect(a, hi > lo ? [lo, hi] : []);
}
