// The element types the oneCCL binding takes beyond the Communicator's (f32/f64/i32, covered by conformance):
// int64 (BigInt64Array) and bf16 bits (Uint16Array, reduced as bfloat16), called on the binding directly with the
// world's oneCCL communicator and polled with progress() until done (10 s at most).
import { CclCommunicator } from '../../../src/comm/ccl/communicator.ts';
import { loadCcl } from '../../../src/comm/ccl/native.ts';
import type { RankContext } from '../../../src/comm/launch.ts';

async function settle(id: number, what: string): Promise<void> {
  const b = loadCcl();
  const ids = Int32Array.of(id);
  const done = new Uint8Array(1);
  const until = performance.now() + 10_000;
  while (b.progress(ids, done, 1000) === 0) {
    if (performance.now() > until) throw new Error(`${what}: not complete after 10 s`);
    await new Promise((r) => setImmediate(r));
  }
}

/** bf16 bits of a float (round to nearest even), and back. */
const toBf16 = (x: number) => {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  return ((u + 0x7fff + ((u >> 16) & 1)) >>> 16) & 0xffff;
};
const fromBf16 = (h: number) => new Float32Array(new Uint32Array([h << 16]).buffer)[0]!;

export async function rankMain(ctx: RankContext<null>): Promise<string[]> {
  if (!(ctx.world instanceof CclCommunicator))
    throw new Error(`run this on the ccl transport (got ${ctx.world.backend})`);
  const b = loadCcl();
  const h = ctx.world.cclHandle;
  const P = ctx.size;
  const me = ctx.rank;
  const checks: string[] = [];
  const expect = (ok: boolean, what: string) => {
    if (!ok) throw new Error(`rank ${me}: ${what}`);
    checks.push(what);
  };

  // int64 beyond 2^53: sum exact, gather in rank order.
  const big = 2n ** 60n;
  const s64 = BigInt64Array.of(big + BigInt(me), -BigInt(me + 1));
  await settle(b.cclAllreduce(h, s64, 0), 'allreduce int64');
  const n = BigInt(P);
  expect(
    s64[0] === n * big + (n * (n - 1n)) / 2n && s64[1] === -(n * (n + 1n)) / 2n,
    'allreduce(sum) int64 exact beyond 2^53',
  );
  const g64 = new BigInt64Array(P);
  await settle(b.cclAllgather(h, BigInt64Array.of(big + BigInt(me)), g64), 'allgather int64');
  expect(
    g64.every((v, r) => v === big + BigInt(r)),
    'allgather int64 in rank order',
  );

  // bf16: 1.5 · (rank + 1) summed; every partial sum is exact in bf16 for small P.
  const bf = Uint16Array.of(toBf16(1.5 * (me + 1)), toBf16(-0.25));
  await settle(b.cclAllreduce(h, bf, 0), 'allreduce bf16');
  expect(fromBf16(bf[0]!) === (1.5 * P * (P + 1)) / 2 && fromBf16(bf[1]!) === -0.25 * P, 'allreduce(sum) bf16');
  const mx = Uint16Array.of(toBf16(me - 0.5));
  await settle(b.cclAllreduce(h, mx, 1), 'allreduce max bf16');
  expect(fromBf16(mx[0]!) === P - 1.5, 'allreduce(max) bf16');
  const gbf = new Uint16Array(2 * P);
  await settle(b.cclAllgather(h, Uint16Array.of(toBf16(me), toBf16(-me)), gbf), 'allgather bf16');
  expect(
    Array.from(gbf, fromBf16).every((v, i) => v === (i % 2 ? -1 : 1) * Math.floor(i / 2)),
    'allgather bf16 in rank order',
  );

  // Mismatched element types are refused before anything is issued.
  let refused = '';
  try {
    b.cclAllgather(h, new Float32Array(1), new BigInt64Array(P));
  } catch (e) {
    refused = (e as Error).message;
  }
  expect(/send is float32, recv is int64/.test(refused), 'mixed element types refused');
  return checks;
}
