// The shared conformance program: one rank program that checks every collective of a Communicator against a plain
// reference, on whatever transport runs it. Every rank can regenerate every other rank's input from the seed, so
// each rank checks its own results locally; no extra communication is trusted.
//
// How a transport runs it (N = 1…8):
//
//   import { launch } from '../../../src/comm/launch.ts';
//   const entry = { module: fileURLToPath(new URL('./programs/conformance.ts', import.meta.url)) };
//   const res = await launch({ transport: 'inproc' | 'threads', size: N, timeoutMs: 5000, profile }, entry,
//                            { seed: 7 } satisfies ConformanceArgs);
//   // every outcome must be ok; outcome.value is this rank's ConformanceSummary
//
// Under MPI each process is one rank: `mpiexec.mpich -n N node --import tsx <driver>.ts`, where the driver calls
// launch({ transport: 'mpi', … }, entry, { seed: 7, tolerance: 1e-6 }) — MPI's library reduces in its own order,
// so float sums match the rank-order reference only up to reassociation. inproc and threads must pass 'exact'.
// Pass `shared: true` to put every buffer in a SharedArrayBuffer.
//
// What it covers: all_gather, all_gather_v, reduce_scatter, all_reduce, all_to_all_v, broadcast, barrier on the
// world and on sub-groups from split (keys reversing the order, ties, singletons, a split of a split); uneven and
// zero-length contributions; float32, float64, int32, bfloat16 (2-byte elements, data movement only); sum, avg, max, premul_sum; several collectives in flight at
// once on one group and on different groups, issued in a rank-dependent order without awaiting in between; ops
// the capabilities deny must reject with kind 'unsupported' without consuming a sequence number; views at a
// nonzero offset whose neighbouring elements must stay untouched; byte-counter call counts; free.

import { checkCall } from '../../../src/comm/capabilities.ts';
import type { CommArray, Communicator, ReduceOp } from '../../../src/comm/communicator.ts';
import { CollectiveError } from '../../../src/comm/errors.ts';
import type { RankContext } from '../../../src/comm/launch.ts';
import {
  alloc,
  compare,
  DTYPES,
  genValues,
  guardViolation,
  hashInts,
  hashStr,
  refReduce,
  Rng,
  type DType,
} from './conformance-ref.ts';

export interface ConformanceArgs {
  seed: number;
  /** Repeat the suite with derived seeds (stress). Default 1. */
  rounds?: number;
  /** 'exact' (default): bitwise equal to the rank-order reduction. A number: relative tolerance (mpi). */
  tolerance?: 'exact' | number;
  /** Allocate every buffer on a SharedArrayBuffer. */
  shared?: boolean;
  /** Allocate on a SharedArrayBuffer only on these world ranks (overrides `shared`): mixes lent and staged sends. */
  sharedRanks?: number[];
  /** Per-call timeout passed in CallOptions (default: the communicator's). */
  timeoutMs?: number;
}

export interface ConformanceSummary {
  rank: number;
  size: number;
  backend: string;
  /** Result arrays compared against the reference. */
  checks: number;
  /** Elements compared. */
  elements: number;
  /** Calls the capabilities deny that rejected with kind 'unsupported', as they must. */
  unsupported: number;
  /** Checks by op name (e.g. "all_reduce"), and "split", "free", "invalid", "bytes". */
  byOp: Record<string, number>;
  /** Names and sizes of the groups exercised, e.g. "parity(4)". */
  groups: string[];
}

type Spec =
  | { kind: 'all_gather'; dtype: DType; n: number }
  | { kind: 'all_gather_v'; dtype: DType; counts: number[] }
  | { kind: 'reduce_scatter'; dtype: DType; n: number; op: ReduceOp }
  | { kind: 'all_reduce'; dtype: DType; n: number; op: ReduceOp }
  | { kind: 'all_to_all_v'; dtype: DType; matrix: number[][] }
  | { kind: 'broadcast'; dtype: DType; n: number; root: number }
  | { kind: 'barrier' };

interface Case {
  label: string;
  /** Whether the communicator's capabilities allow it (else it must reject as 'unsupported'). */
  allowed: boolean;
  issue(): Promise<void>;
  verify(): void;
}

class Checker {
  readonly summary: ConformanceSummary;
  constructor(
    readonly ctx: RankContext<ConformanceArgs>,
    readonly round: number,
  ) {
    this.summary = {
      rank: ctx.rank,
      size: ctx.size,
      backend: ctx.world.backend,
      checks: 0,
      elements: 0,
      unsupported: 0,
      byOp: {},
      groups: [],
    };
  }
  get tolerance(): 'exact' | number {
    return this.ctx.args.tolerance ?? 'exact';
  }
  count(op: string, elements = 0): void {
    this.summary.checks++;
    this.summary.elements += elements;
    this.summary.byOp[op] = (this.summary.byOp[op] ?? 0) + 1;
  }
  fail(g: Communicator, label: string, what: string): never {
    throw new Error(
      `conformance (seed ${this.ctx.args.seed}, round ${this.round}, backend ${g.backend}): ${label} on group ${g.name} ` +
        `(world ranks ${g.ranks.join(',')}; this is world rank ${this.ctx.rank} = group rank ${g.rank}): ${what}`,
    );
  }
}

const OPS_FLOAT: ReduceOp[] = [
  { op: 'sum' },
  { op: 'avg' },
  { op: 'max' },
  { op: 'premul_sum', factor: 0.1 },
  { op: 'premul_sum', factor: 0.25 },
];
const OPS_INT: ReduceOp[] = [{ op: 'sum' }, { op: 'max' }];
const opName = (op: ReduceOp) => (op.op === 'premul_sum' ? `premul_sum(${op.factor})` : op.op);
const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/** Builds the case for `spec` on group g; inputs depend on (seed, round, group, case index, contributor). */
function makeCase(ck: Checker, g: Communicator, spec: Spec, index: number): Case {
  const args = ck.ctx.args;
  const shared = args.sharedRanks ? args.sharedRanks.includes(ck.ctx.rank) : (args.shared ?? false);
  const opts = { timeoutMs: args.timeoutMs, tag: `conformance ${g.name} #${index}` };
  const groupKey = hashStr(`${g.name}[${g.ranks.join(',')}]`);
  // Input of contributor with group rank i: a function of values every member knows.
  const input = (dtype: DType, i: number, n: number) =>
    genValues(dtype, n, hashInts(args.seed, ck.round, groupKey, index, g.ranks[i]!));
  const multiNode = g.multiNode ?? false;
  const me = g.rank;
  const P = g.size;
  const label = (s: string) => `${s} [case ${index}]`;
  const check = (what: string, got: CommArray, want: readonly number[], scale?: readonly number[]) => {
    const guard = guardViolation(got);
    if (guard) ck.fail(g, what, `buffer guard: ${guard}`);
    const diff = compare(
      got,
      want,
      spec.kind === 'all_reduce' || spec.kind === 'reduce_scatter' ? ck.tolerance : 'exact',
      scale,
    );
    if (diff) ck.fail(g, what, diff);
    ck.count(spec.kind, want.length);
  };

  switch (spec.kind) {
    case 'all_gather': {
      const { dtype, n } = spec;
      const send = alloc(dtype, n, shared, input(dtype, me, n));
      const recv = alloc(dtype, n * P, shared);
      const l = label(`all_gather ${dtype} n=${n}`);
      return {
        label: l,
        allowed: checkCall(g.capabilities, 'all_gather', undefined).ok,
        issue: () => g.allGather(send, recv, opts),
        verify: () => {
          const want: number[] = [];
          for (let i = 0; i < P; i++) want.push(...input(dtype, i, n));
          check(l, recv, want);
          if (guardViolation(send)) ck.fail(g, l, 'send buffer guard overwritten');
        },
      };
    }
    case 'all_gather_v': {
      const { dtype, counts } = spec;
      const send = alloc(dtype, counts[me]!, shared, input(dtype, me, counts[me]!));
      const recv = alloc(dtype, sum(counts), shared);
      const l = label(`all_gather_v ${dtype} counts=[${counts.join(',')}]`);
      return {
        label: l,
        allowed: checkCall(g.capabilities, 'all_gather_v', undefined).ok,
        issue: () => g.allGatherV(send, recv, counts, opts),
        verify: () => {
          const want: number[] = [];
          for (let i = 0; i < P; i++) want.push(...input(dtype, i, counts[i]!));
          check(l, recv, want);
        },
      };
    }
    case 'reduce_scatter': {
      const { dtype, n, op } = spec;
      const send = alloc(dtype, n * P, shared, input(dtype, me, n * P));
      const recv = alloc(dtype, n, shared);
      const l = label(`reduce_scatter ${opName(op)} ${dtype} n=${n}`);
      return {
        label: l,
        allowed: checkCall(g.capabilities, 'reduce_scatter', op, { multiNode }).ok,
        issue: () => g.reduceScatter(send, recv, op, opts),
        verify: () => {
          const blocks = Array.from({ length: P }, (_, i) => input(dtype, i, n * P).slice(me * n, (me + 1) * n));
          const ref = refReduce(dtype, blocks, op);
          check(l, recv, ref.value, ref.scale);
          const mine = input(dtype, me, n * P);
          if (compare(send, mine, 'exact')) ck.fail(g, l, 'the send buffer was modified');
        },
      };
    }
    case 'all_reduce': {
      const { dtype, n, op } = spec;
      const buf = alloc(dtype, n, shared, input(dtype, me, n));
      const l = label(`all_reduce ${opName(op)} ${dtype} n=${n}`);
      return {
        label: l,
        allowed: checkCall(g.capabilities, 'all_reduce', op, { multiNode }).ok,
        issue: () => g.allReduce(buf, op, opts),
        verify: () => {
          const ref = refReduce(
            dtype,
            Array.from({ length: P }, (_, i) => input(dtype, i, n)),
            op,
          );
          check(l, buf, ref.value, ref.scale);
        },
      };
    }
    case 'all_to_all_v': {
      const { dtype, matrix } = spec;
      // matrix[i][j]: elements group rank i sends to group rank j.
      const sendCounts = matrix[me]!;
      const recvCounts = matrix.map((row) => row[me]!);
      const send = alloc(dtype, sum(sendCounts), shared, input(dtype, me, sum(sendCounts)));
      const recv = alloc(dtype, sum(recvCounts), shared);
      const flat = matrix.flat();
      const equalCounts = flat.every((c) => c === flat[0]);
      const l = label(
        `all_to_all_v ${dtype} ${equalCounts ? 'equal' : 'uneven'} counts (row ${me}: [${sendCounts.join(',')}])`,
      );
      return {
        label: l,
        allowed: checkCall(g.capabilities, 'all_to_all_v', undefined, { equalCounts }).ok,
        issue: () => g.allToAllV(send, sendCounts, recv, recvCounts, opts),
        verify: () => {
          const want: number[] = [];
          for (let i = 0; i < P; i++) {
            const theirs = input(dtype, i, sum(matrix[i]!));
            const off = sum(matrix[i]!.slice(0, me));
            want.push(...theirs.slice(off, off + matrix[i]![me]!));
          }
          check(l, recv, want);
        },
      };
    }
    case 'broadcast': {
      const { dtype, n, root } = spec;
      const buf = alloc(dtype, n, shared, me === root ? input(dtype, root, n) : genValues(dtype, n, 12345 + me));
      const l = label(`broadcast ${dtype} n=${n} root=${root}`);
      return {
        label: l,
        allowed: checkCall(g.capabilities, 'broadcast', undefined).ok,
        issue: () => g.broadcast(buf, root, opts),
        verify: () => check(l, buf, input(dtype, root, n)),
      };
    }
    case 'barrier':
      return {
        label: label('barrier'),
        allowed: checkCall(g.capabilities, 'barrier', undefined).ok,
        issue: () => g.barrier(opts),
        verify: () => ck.count('barrier'),
      };
  }
}

/** The specs of one suite on a group of size P. Identical on every member (a function of seed, round, P, name). */
function suiteSpecs(ck: Checker, g: Communicator, small: boolean): Spec[] {
  const P = g.size;
  const rng = new Rng(hashInts(ck.ctx.args.seed, ck.round, hashStr(g.name), P));
  const ns = small ? [0, 3] : [0, 1, 7, 33];
  const specs: Spec[] = [];
  for (const dtype of DTYPES) {
    for (const n of ns) specs.push({ kind: 'all_gather', dtype, n });
    // Uneven counts with a zero in the middle (when P > 1), and a case where every count is zero.
    const counts = Array.from({ length: P }, (_, i) => (P > 1 && i === P >> 1 ? 0 : rng.int(1, 9)));
    specs.push({ kind: 'all_gather_v', dtype, counts });
    if (!small) specs.push({ kind: 'all_gather_v', dtype, counts: counts.map(() => 0) });
    for (const op of dtype === 'int32' ? OPS_INT : dtype === 'bfloat16' ? [{ op: 'sum' } as ReduceOp] : OPS_FLOAT) {
      for (const n of small ? [2] : [0, 5, 17]) {
        specs.push({ kind: 'reduce_scatter', dtype, n, op });
        // bf16 reduces by reduce_scatter only (FSDP gradients under mixed_precision_reduce = "bfloat16").
        if (dtype !== 'bfloat16') specs.push({ kind: 'all_reduce', dtype, n: n + (n > 0 ? 2 : 0), op });
      }
    }
    const uneven = Array.from({ length: P }, () =>
      Array.from({ length: P }, () => (rng.int(0, 3) === 0 ? 0 : rng.int(1, 6))),
    );
    specs.push({ kind: 'all_to_all_v', dtype, matrix: uneven });
    const k = small ? 2 : 4;
    specs.push({ kind: 'all_to_all_v', dtype, matrix: Array.from({ length: P }, () => new Array<number>(P).fill(k)) });
  }
  for (let root = 0; root < P; root++)
    specs.push({ kind: 'broadcast', dtype: DTYPES[root % 3]!, n: small ? 3 : 11, root });
  specs.push({ kind: 'broadcast', dtype: 'float32', n: 0, root: P - 1 });
  specs.push({ kind: 'barrier' });
  return specs;
}

/** Runs one case to completion; a denied op must reject as 'unsupported'. Returns whether it issued a call. */
async function runCase(ck: Checker, g: Communicator, c: Case): Promise<boolean> {
  if (!c.allowed) {
    await expectRejection(ck, g, c.label, c.issue, 'unsupported');
    ck.summary.unsupported++;
    return false;
  }
  await c.issue();
  c.verify();
  return true;
}

async function expectRejection(
  ck: Checker,
  g: Communicator,
  label: string,
  fn: () => Promise<unknown>,
  kind: CollectiveError['kind'],
): Promise<void> {
  let err: unknown;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  if (!(err instanceof CollectiveError) || err.kind !== kind) {
    ck.fail(
      g,
      label,
      `expected a CollectiveError of kind '${kind}', got ${err === undefined ? 'success' : String(err)}`,
    );
  }
}

/** The full suite on g, sequentially; checks that the byte counters counted exactly the calls that ran. */
async function runSuite(ck: Checker, g: Communicator, small: boolean, indexBase: number): Promise<void> {
  ck.summary.groups.push(`${g.name}(${g.size})`);
  const callsBefore = g.bytes.calls;
  let issued = 0;
  const specs = suiteSpecs(ck, g, small);
  for (let i = 0; i < specs.length; i++) {
    if (await runCase(ck, g, makeCase(ck, g, specs[i]!, indexBase + i))) issued++;
  }
  // Arguments the base rejects must not consume a sequence number (the next collectives would desync otherwise).
  await expectRejection(
    ck,
    g,
    'all_gather with a wrong recv length',
    () => g.allGather(new Float32Array(2), new Float32Array(2 * g.size + 1)),
    'invalid',
  );
  await expectRejection(
    ck,
    g,
    'all_reduce avg on int32',
    () => g.allReduce(new Int32Array(2), { op: 'avg' }),
    'invalid',
  );
  await expectRejection(
    ck,
    g,
    'all_reduce sum on bf16 bits',
    () => g.allReduce(new Uint16Array(2), { op: 'sum' }),
    'invalid',
  );
  await expectRejection(
    ck,
    g,
    'reduce_scatter avg on bf16 bits',
    () => g.reduceScatter(new Uint16Array(2 * g.size), new Uint16Array(2), { op: 'avg' }),
    'invalid',
  );
  ck.count('invalid');
  await runCase(ck, g, makeCase(ck, g, { kind: 'barrier' }, indexBase + specs.length));
  issued++;
  if (g.bytes.calls - callsBefore !== issued) {
    ck.fail(g, 'byte counters', `bytes.calls grew by ${g.bytes.calls - callsBefore}, but ${issued} collectives ran`);
  }
  ck.count('bytes');
}

/** split, checking membership and order: by key, ties by rank in the parent group (MPI_Comm_split's rule). */
async function checkedSplit(
  ck: Checker,
  parent: Communicator,
  color: (wr: number) => number,
  key: (wr: number) => number,
  name: string,
): Promise<Communicator> {
  const me = ck.ctx.rank;
  const g = await parent.split(color(me), key(me), name);
  const expected = parent.ranks
    .filter((wr) => color(wr) === color(me))
    .sort((a, b) => key(a) - key(b) || parent.ranks.indexOf(a) - parent.ranks.indexOf(b));
  if (
    g.name !== name ||
    g.size !== expected.length ||
    g.ranks.join(',') !== expected.join(',') ||
    g.ranks[g.rank] !== me
  ) {
    ck.fail(
      g,
      `split(${color(me)}, ${key(me)}) of ${parent.name}`,
      `got name ${g.name}, ranks [${g.ranks.join(',')}], rank ${g.rank}; expected ranks [${expected.join(',')}] ordered by (key, rank)`,
    );
  }
  ck.count('split');
  return g;
}

/**
 * Several collectives in flight at once: two on the world (same order everywhere, as every transport requires per
 * group) and one on each of two sub-groups, issued in a rank-dependent order across groups, without awaiting.
 */
async function runConcurrent(
  ck: Checker,
  world: Communicator,
  a: Communicator,
  b: Communicator,
  indexBase: number,
): Promise<void> {
  const cases: [Communicator, Case][] = [];
  const add = (g: Communicator, spec: Spec) => cases.push([g, makeCase(ck, g, spec, indexBase + cases.length)]);
  add(world, { kind: 'all_reduce', dtype: 'float32', n: 13, op: { op: 'sum' } });
  add(world, { kind: 'all_gather', dtype: 'int32', n: 5 });
  add(a, { kind: 'reduce_scatter', dtype: 'float64', n: 3, op: { op: 'max' } });
  add(b, { kind: 'all_reduce', dtype: 'float32', n: 9, op: { op: 'sum' } });
  add(a, { kind: 'all_gather', dtype: 'float32', n: 4 });
  const runnable = cases.filter(([, c]) => c.allowed);
  // Per-group order is preserved; the interleaving across groups depends on the rank.
  const order =
    ck.ctx.rank % 2 === 0
      ? runnable
      : [...runnable.filter(([g]) => g !== world), ...runnable.filter(([g]) => g === world)];
  const inFlight = order.map(([, c]) => c.issue());
  await Promise.all(inFlight);
  for (const [, c] of order) c.verify();
}

async function runRound(ctx: RankContext<ConformanceArgs>, round: number): Promise<ConformanceSummary> {
  const ck = new Checker(ctx, round);
  const world = ctx.world;
  const me = ctx.rank;
  const P = ctx.size;
  if (world.size !== P || world.rank !== me || world.ranks.length !== P || world.ranks.some((r, i) => r !== i)) {
    ck.fail(
      world,
      'world communicator',
      `rank ${world.rank}, size ${world.size}, ranks [${world.ranks.join(',')}] do not describe world rank ${me} of ${P}`,
    );
  }
  // Case indices restart per group: a group's members must agree on them, and the group key already separates
  // groups, while the suites a rank ran before on other groups differ between members.
  await runSuite(ck, world, false, 0);

  // Keys reverse the order; ties fall back to rank; singletons; a split of a split.
  const parity = await checkedSplit(
    ck,
    world,
    (r) => r % 2,
    (r) => P - r,
    'parity',
  );
  const halves = await checkedSplit(
    ck,
    world,
    (r) => (r < Math.ceil(P / 2) ? 0 : 1),
    () => 0,
    'halves',
  );
  const self = await checkedSplit(
    ck,
    world,
    (r) => r,
    () => 0,
    'self',
  );
  const quarter = await checkedSplit(
    ck,
    parity,
    (r) => (parity.ranks.indexOf(r) < parity.size / 2 ? 0 : 1),
    (r) => r % 3,
    'parity.half',
  );
  for (const g of [parity, halves, self, quarter]) await runSuite(ck, g, true, 0);

  await runConcurrent(ck, world, parity, halves, 1_000_000);

  for (const g of [quarter, self, halves, parity]) {
    await g.free();
    await expectRejection(
      ck,
      g,
      'all_reduce after free',
      () => g.allReduce(new Float32Array(1), { op: 'sum' }),
      'freed',
    );
    ck.count('free');
  }
  // Everyone leaves together, so a late rank's failure cannot be masked by another rank's exit.
  await world.barrier({ timeoutMs: ctx.args.timeoutMs });
  return ck.summary;
}

export async function rankMain(ctx: RankContext<ConformanceArgs>): Promise<ConformanceSummary> {
  const rounds = ctx.args.rounds ?? 1;
  let total: ConformanceSummary | undefined;
  for (let round = 0; round < rounds; round++) {
    const s = await runRound(ctx, round);
    if (!total) total = s;
    else {
      total.checks += s.checks;
      total.elements += s.elements;
      total.unsupported += s.unsupported;
      for (const [k, v] of Object.entries(s.byOp)) total.byOp[k] = (total.byOp[k] ?? 0) + v;
    }
  }
  return total!;
}
