// Python's number formatting, as torchtitan's f-strings use it, so the console line is the same text:
//   {x:W.Df}  fixed point, round-half-even on the exact binary value, padded left to width W;
//   {n:,}     thousands separators;  round(x)  round-half-even to an integer;
//   nan/inf   spelt "nan", "inf", "-inf".

/** Python's round(x) for floats: nearest integer, ties to even. */
export function pyRound(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x);
  const d = x - f;
  // "+ 0" turns -0 into 0: Python's round() returns an int, which has no negative zero.
  if (d > 0.5) return f + 1 + 0;
  if (d < 0.5) return f + 0;
  return (f % 2 === 0 ? f : f + 1) + 0;
}

function special(x: number): string | null {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  return null;
}

/**
 * Fixed-point text of x with `decimals` digits, rounded like Python (exact value, ties to even). JS's toFixed
 * rounds exact ties up (0.125 → "0.13" where Python prints "0.12"); the tie is detected on the exact expansion.
 */
export function pyFixed(x: number, decimals: number): string {
  const s = special(x);
  if (s !== null) return s;
  if (Math.abs(x) >= 1e21) return x.toFixed(decimals); // not reached by metrics; JS switches to exponent form here
  const exact = Math.abs(x).toFixed(Math.min(100, decimals + 30));
  const dot = exact.indexOf('.');
  const tail = exact.slice(dot + 1 + decimals);
  let out = x.toFixed(decimals);
  if (/^50*$/.test(tail)) {
    // Exact tie: toFixed rounded away from zero; Python keeps the even neighbour.
    const truncated = exact.slice(0, dot + 1 + decimals).replace(/\.$/, '');
    const lastDigit = Number(truncated.replace('.', '').slice(-1));
    if (lastDigit % 2 === 0) out = (x < 0 ? '-' : '') + truncated;
  }
  // toFixed drops the sign of -0; Python keeps it ("-0.00").
  if (Object.is(x, -0)) out = '-' + out;
  return out;
}

/** Python `{x:W.Df}`. */
export function fmtFloat(x: number, width: number, decimals: number): string {
  return pyFixed(x, decimals).padStart(width);
}

/** Python `{x:,.Df}` (or `{n:,}` for an integer with decimals = 0). */
export function fmtCommas(x: number, decimals = 0): string {
  const s = special(x);
  if (s !== null) return s;
  const t = decimals === 0 && Number.isInteger(x) ? String(Math.abs(x)) : pyFixed(Math.abs(x), decimals);
  const [int, frac] = t.split('.') as [string, string | undefined];
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return (x < 0 || Object.is(x, -0) ? '-' : '') + grouped + (frac !== undefined ? '.' + frac : '');
}

/** Python `{n:W}` for an int: right-aligned. */
export function fmtInt(n: number, width: number): string {
  return String(n).padStart(width);
}
