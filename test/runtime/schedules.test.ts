// Randomized multi-rank schedules on the inproc transport. Each case draws a job at random (model family, 2-4
// ranks and layout, EP dispatch strategy, activation checkpointing, gradient accumulation, reshard policy,
// gradient reduction, batch) and runs it (test/runtime/programs/invariant-run.ts: 2 optimizer steps) under
// several scheduler seeds, some with delays injected on random ranks and groups. At every collective, in the
// order the events happen (the inproc world's observer sees all ranks), it checks:
//   - lockstep: no rank completes collective #n of a group before every member has started #n, so no rank is
//     ahead of another by more than one collective on a group (more only by collectives it issued together and
//     still has in flight — allgather-rs's routing ids + gates);
//   - sequence numbers per group and rank increase by one;
//   - sizes agree across members: all_to_all_v sendCounts[j] of rank i = recvCounts[i] of rank j (so Σ sent =
//     Σ received per group), all_gather / reduce_scatter / all_reduce sizes consistent;
//   - the MoE counts exchange matches the rows moved (a2a splits = D·Σ counts per destination; padded all_gather
//     of D·max rows; allgather-rs tokens vs routing ids), and every rank routes N·K rows;
//   - every rank's byte counters equal the sum of what it was seen sending and receiving;
//   - every activation buffer goes back to the pool after each step (Allocator live 'activations' and the pool's
//     handed-out count back to their values before the first step);
// and across seeds: losses, grad norms and all final parameters bit-identical (the numbers must not depend on
// the interleaving). MOE_RUNTIME_SEED=<n> explores other cases; the case and seeds are printed on failure.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import type { CommObserver } from '../../src/comm/base-communicator.ts';
import type { Communicator } from '../../src/comm/communicator.ts';
import type { FlightEntry } from '../../src/comm/flight-recorder.ts';
import type { Fault } from '../../src/comm/launch.ts';
import type { ParallelDegrees } from '../../src/comm/mesh-layout.ts';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import type { InprocCommunicator } from '../../src/comm/inproc/communicator.ts';
import { seededRandom } from '../../src/comm/inproc/scheduler.ts';
import { resolveModelConfig, type ResolvedModelConfig } from '../../src/models/config.ts';
import type { AcMode } from '../../src/models/model/ac.ts';
import type { RankJob } from '../../src/actors/rank-host.ts';
import type { DistributedRunArgs } from '../../src/actors/programs/distributed-run.ts';
import type { GradReduce } from '../../src/protocols/fsdp-unit.machine.ts';
import type { DispatchStrategy } from '../../src/protocols/strategies.ts';
import { rankMain, type InvariantResult, type MetaRecord } from './programs/invariant-run.ts';

const FIX = fileURLToPath(new URL('../fixtures/parity/', import.meta.url));
const BASE_SEED = Number(process.env.MOE_RUNTIME_SEED ?? 20_251_126);
const CASES = 16;
const SEEDS_PER_CASE = 3;

// ---- the invariant checker ----

interface Seen {
  rank: number;
  op: FlightEntry['op'];
  dtype: FlightEntry['dtype'];
  reduceOp?: string;
  tag: string | null;
  inNelems: number;
  outNelems: number;
  inSplits?: readonly number[];
  outSplits?: readonly number[];
  root?: number;
}

interface GroupState {
  name: string;
  ranks: readonly number[];
  started: Map<number, number>;
  /** Per rank: seqs started and not completed. */
  inflight: Map<number, Set<number>>;
  /** Per seq: what each member issued, until every member completed it. */
  calls: Map<number, { seen: Map<number, Seen>; completed: Set<number> }>;
  /** Largest lead (started_A − started_B) seen, and the largest not explained by A's own in-flight calls. */
  maxLead: number;
}

const BPE: Record<FlightEntry['dtype'], number> = { float32: 4, float64: 8, int32: 4, bfloat16: 2 };

export class CollectiveInvariants implements CommObserver {
  readonly violations: string[] = [];
  readonly groups = new Map<number | string, GroupState>();
  /** Per world rank, the EP collectives in the order the rank issued them. */
  readonly epCalls = new Map<number, Seen[]>();
  /** Per world rank and group name: bytes seen sent/received (as BaseCommunicator counts them). */
  readonly bytes = new Map<string, { sent: number; received: number }>();
  collectives = 0;
  a2aSent = 0;
  a2aReceived = 0;

  private bad(msg: string): void {
    if (this.violations.length < 20) this.violations.push(msg);
  }

  private state(comm: Communicator): GroupState {
    const key = (comm as InprocCommunicator).group?.id ?? `${comm.name}:${comm.ranks.join(',')}`;
    let g = this.groups.get(key);
    if (!g) {
      g = { name: comm.name, ranks: comm.ranks, started: new Map(), inflight: new Map(), calls: new Map(), maxLead: 0 };
      for (const r of comm.ranks) {
        g.started.set(r, 0);
        g.inflight.set(r, new Set());
      }
      this.groups.set(key, g);
    }
    return g;
  }

  onStart(comm: Communicator, e: FlightEntry): void {
    const g = this.state(comm);
    const me = comm.ranks[comm.rank]!;
    const where = `${e.op} #${e.seq} on ${g.name} (ranks ${g.ranks.join(',')}) by rank ${me}`;
    if (e.seq !== g.started.get(me)! + 1)
      this.bad(`${where}: previous seq started by this rank was ${g.started.get(me)}`);
    g.started.set(me, e.seq);
    const mine = g.inflight.get(me)!;
    mine.add(e.seq);
    const minStarted = Math.min(...g.ranks.map((r) => g.started.get(r)!));
    const lead = e.seq - minStarted;
    g.maxLead = Math.max(g.maxLead, lead);
    // Ahead by more than one only through calls issued together (all still in flight on this rank).
    if (lead > Math.max(1, mine.size))
      this.bad(`${where}: ${lead} collectives ahead of the slowest member with only ${mine.size} in flight`);
    const s: Seen = {
      rank: me,
      op: e.op,
      dtype: e.dtype,
      reduceOp: e.reduceOp,
      tag: e.tag,
      inNelems: e.inNelems,
      outNelems: e.outNelems,
      inSplits: e.inSplits,
      outSplits: e.outSplits,
      root: e.root,
    };
    let c = g.calls.get(e.seq);
    if (!c) g.calls.set(e.seq, (c = { seen: new Map(), completed: new Set() }));
    c.seen.set(me, s);
    if (g.name === 'ep') {
      const l = this.epCalls.get(me) ?? [];
      l.push(s);
      this.epCalls.set(me, l);
    }
    const b = this.bytes.get(`${me}/${g.name}`) ?? { sent: 0, received: 0 };
    const bpe = BPE[e.dtype];
    if (e.op === 'broadcast') {
      if (comm.rank === e.root) b.sent += e.inNelems * bpe;
      else b.received += e.outNelems * bpe;
    } else {
      b.sent += e.inNelems * bpe;
      b.received += e.outNelems * bpe;
    }
    this.bytes.set(`${me}/${g.name}`, b);
  }

  onEnd(comm: Communicator, e: FlightEntry): void {
    const g = this.state(comm);
    const me = comm.ranks[comm.rank]!;
    const where = `${e.op} #${e.seq} on ${g.name} (ranks ${g.ranks.join(',')}) at rank ${me}`;
    if (e.state !== 'completed') return this.bad(`${where} ended ${e.state}: ${e.error}`);
    g.inflight.get(me)!.delete(e.seq);
    const behind = g.ranks.filter((r) => g.started.get(r)! < e.seq);
    if (behind.length) this.bad(`${where} completed before rank(s) ${behind.join(',')} started it`);
    const c = g.calls.get(e.seq)!;
    c.completed.add(me);
    if (c.completed.size === g.ranks.length) {
      this.checkCall(
        g,
        e.seq,
        [...g.ranks].map((r) => c.seen.get(r)!),
      );
      g.calls.delete(e.seq);
      this.collectives++;
    }
  }

  private checkCall(g: GroupState, seq: number, m: Seen[]): void {
    const P = m.length;
    const head = m[0]!;
    const where = `${head.op} #${seq} on ${g.name} (ranks ${g.ranks.join(',')}, tag ${head.tag})`;
    for (const x of m) {
      if (x.op !== head.op || x.dtype !== head.dtype || x.reduceOp !== head.reduceOp)
        this.bad(`${where}: rank ${x.rank} issued ${x.op}/${x.dtype}/${x.reduceOp}`);
    }
    const sent = m.reduce((a, x) => a + x.inNelems, 0);
    const recv = m.reduce((a, x) => a + x.outNelems, 0);
    switch (head.op) {
      case 'all_to_all_v':
        for (let i = 0; i < P; i++) {
          for (let j = 0; j < P; j++) {
            if (m[i]!.inSplits![j] !== m[j]!.outSplits![i])
              this.bad(
                `${where}: rank ${m[i]!.rank} sends ${m[i]!.inSplits![j]} to rank ${m[j]!.rank}, which expects ${m[j]!.outSplits![i]}`,
              );
          }
        }
        if (sent !== recv) this.bad(`${where}: Σ sent ${sent} ≠ Σ received ${recv}`);
        this.a2aSent += sent;
        this.a2aReceived += recv;
        break;
      case 'all_gather':
        for (const x of m)
          if (x.inNelems !== head.inNelems || x.outNelems !== P * x.inNelems)
            this.bad(`${where}: rank ${x.rank} in ${x.inNelems} out ${x.outNelems}`);
        if (recv !== P * sent) this.bad(`${where}: Σ received ${recv} ≠ ${P}·Σ sent ${sent}`);
        break;
      case 'reduce_scatter':
        for (const x of m)
          if (x.outNelems !== head.outNelems || x.inNelems !== P * x.outNelems)
            this.bad(`${where}: rank ${x.rank} in ${x.inNelems} out ${x.outNelems}`);
        break;
      case 'all_reduce':
        for (const x of m)
          if (x.inNelems !== head.inNelems || x.outNelems !== x.inNelems)
            this.bad(`${where}: rank ${x.rank} has ${x.inNelems} elements`);
        break;
      case 'all_gather_v':
        for (const x of m)
          if (x.inSplits!.join() !== head.inSplits!.join()) this.bad(`${where}: rank ${x.rank} counts ${x.inSplits}`);
        break;
      default:
        break;
    }
  }

  /** After the run: nothing left half done. */
  finish(): void {
    for (const g of this.groups.values()) {
      for (const [seq, c] of g.calls)
        this.bad(
          `${g.name} (ranks ${g.ranks.join(',')}) #${seq} never completed on every member (completed by ${[...c.completed].join(',') || 'none'})`,
        );
    }
  }
}

// ---- random jobs ----

interface Layout {
  name: string;
  ranks: number;
  degrees: Partial<ParallelDegrees>;
}

const LAYOUTS: Layout[] = [
  { name: 'fsdp2-ep2', ranks: 2, degrees: { dp_shard: 2, ep: 2 } },
  { name: 'fsdp4-ep2', ranks: 4, degrees: { dp_shard: 4, ep: 2 } },
  { name: 'fsdp4-ep4', ranks: 4, degrees: { dp_shard: 4, ep: 4 } },
  { name: 'hsdp2x2-ep2', ranks: 4, degrees: { dp_replicate: 2, dp_shard: 2, ep: 2 } },
  { name: 'fsdp2', ranks: 2, degrees: { dp_shard: 2, ep: 1 } },
  { name: 'hsdp2x1', ranks: 2, degrees: { dp_replicate: 2, dp_shard: 1, ep: 1 } },
  { name: 'fsdp3', ranks: 3, degrees: { dp_shard: 3, ep: 1 } },
];

interface Case {
  id: number;
  fixture: string;
  model: ResolvedModelConfig;
  layout: Layout;
  dispatch: DispatchStrategy;
  ac: AcMode;
  ga: number;
  reshard: RankJob['reshard'];
  gradReduce: GradReduce;
  divideFactor: number;
  B: number;
  S: number;
  /** Scheduler seeds and the delays of each run (the first run has none). */
  runs: { seed: number; faults: Fault[] }[];
  describe: string;
}

function makeCase(id: number): Case {
  const rnd = seededRandom(BASE_SEED * 7919 + id);
  const pick = <T>(xs: readonly T[]): T => xs[rnd() % xs.length]!;
  const fixture = pick(['llama4_shared2_train', 'dsv3_groups_softmax_train']);
  // Dispatch is what most can go wrong: 5 of 7 draws have EP > 1.
  const layout = pick([...LAYOUTS.slice(0, 4), ...LAYOUTS.slice(0, 4), ...LAYOUTS.slice(4)]);
  const dispatch = pick(['a2a', 'allgather-padded', 'allgather-rs'] as const);
  const ac = pick<AcMode>([
    { mode: 'none' },
    { mode: 'full' },
    { mode: 'selective', every: 2 },
    { mode: 'selective', every: 1 },
    { mode: 'selective', op: true },
  ]);
  const ga = pick([1, 2]);
  const reshard = pick(['default', 'always', 'never'] as const);
  const [gradReduce, divideFactor] = pick<[GradReduce, number]>([
    ['sum', 1],
    ['sum-divide', 4],
    ['premul-sum', 2],
  ]);
  const batchDegree = (layout.degrees.dp_replicate ?? 1) * (layout.degrees.dp_shard ?? 1);
  const B = batchDegree * ga * pick([1, 2]);
  const S = pick([8, 16]);
  const cfg = parse(readFileSync(`${FIX}${fixture}/config.toml`, 'utf8')) as Record<string, any>;
  const model = resolveModelConfig(cfg.model, S);
  const runs: Case['runs'] = [];
  for (let k = 0; k < SEEDS_PER_CASE; k++) {
    const faults: Fault[] = [];
    if (k > 0) {
      const n = 1 + (rnd() % 2);
      for (let f = 0; f < n; f++) {
        const group = pick([undefined, 'ep', 'fsdp', 'fsdp_reduce', 'loss', 'batch']);
        faults.push({ kind: 'delay', rank: rnd() % layout.ranks, ms: 1 + (rnd() % 3), ...(group ? { group } : {}) });
      }
    }
    runs.push({ seed: rnd() % 100_000, faults });
  }
  const acName = ac.mode === 'selective' ? ('op' in ac ? 'selective-op' : `selective-${ac.every}`) : ac.mode;
  return {
    id,
    fixture,
    model,
    layout,
    dispatch,
    ac,
    ga,
    reshard,
    gradReduce,
    divideFactor,
    B,
    S,
    runs,
    describe: `case ${id} (MOE_RUNTIME_SEED=${BASE_SEED}): ${fixture} ${layout.name} ${layout.degrees.ep! > 1 ? dispatch : 'local'} AC ${acName} GA ${ga} reshard ${reshard} ${gradReduce}/${divideFactor} B ${B} S ${S}`,
  };
}

function argsOf(c: Case): DistributedRunArgs {
  const rnd = seededRandom(c.id + 1);
  const V = c.model.args.vocab_size;
  const tokens = new Int32Array(c.B * c.S).map(() => rnd() % V);
  const labels = new Int32Array(c.B * c.S).map((_, i) => (rnd() % 11 === 0 && i > 0 ? -100 : rnd() % V));
  const job: RankJob = {
    model: c.model,
    degrees: c.layout.degrees,
    dispatch: c.dispatch,
    gradReduce: c.gradReduce,
    divideFactor: c.divideFactor,
    reshard: c.reshard,
    ac: c.ac,
    adamw: { lr: 4e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 },
    schedule: { totalSteps: 2, warmupSteps: 1, decayRatio: null, decayType: 'linear', minLrFactor: 0 },
    maxNorm: 1,
    seed: c.id,
  };
  return { job, tokens, labels, B: c.B, S: c.S, microbatches: c.ga, mode: 'train', steps: 2 };
}

/** Checks that the MoE metadata each rank exchanged matches the EP collectives that moved its rows. */
function checkMoeCounts(c: Case, inv: CollectiveInvariants, results: InvariantResult[]): string[] {
  const bad: string[] = [];
  const moe = c.model.args.moe_args;
  const E = moe.num_experts;
  const K = moe.top_k;
  const D = c.model.args.dim;
  const P = c.layout.degrees.ep ?? 1;
  const L = E / P;
  const batchDegree = (c.layout.degrees.dp_replicate ?? 1) * (c.layout.degrees.dp_shard ?? 1);
  const N = (c.B / batchDegree / c.ga) * c.S;
  const sum = (xs: readonly number[], a = 0, b = xs.length) => xs.slice(a, b).reduce((x, y) => x + y, 0);
  let checked = 0;
  for (const r of results) {
    const calls = inv.epCalls.get(r.rank) ?? [];
    const metas = [...r.meta];
    for (let i = 0; i < calls.length; i++) {
      const call = calls[i]!;
      if (!call.tag || !(call.tag.endsWith(' counts') || call.tag.endsWith(' routing ids'))) continue;
      const meta: MetaRecord | undefined = metas.shift();
      const prefix = call.tag.replace(/ (counts|routing ids)$/, '');
      const where = `rank ${r.rank} ${prefix}`;
      if (!meta || meta.tag !== call.tag) {
        bad.push(`${where}: metadata record ${meta?.tag} does not follow the observed ${call.tag}`);
        continue;
      }
      const dispatch = calls.slice(i + 1).find((x) => x.tag === `${prefix} dispatch`);
      const combine = calls.slice(i + 1).find((x) => x.tag === `${prefix} combine`);
      if (!dispatch || !combine) {
        bad.push(`${where}: no dispatch/combine after the counts`);
        continue;
      }
      checked++;
      if (c.dispatch === 'a2a') {
        // send: my rows per global expert (E); recv: rows per my local expert from each source (P·L).
        if (sum(meta.send) !== N * K) bad.push(`${where}: routes ${sum(meta.send)} rows, expected N·K = ${N * K}`);
        for (let j = 0; j < P; j++) {
          if (dispatch.inSplits![j] !== D * sum(meta.send, j * L, (j + 1) * L))
            bad.push(
              `${where}: sends ${dispatch.inSplits![j]} elements to EP rank ${j}, counts say ${D}·${sum(meta.send, j * L, (j + 1) * L)}`,
            );
          if (dispatch.outSplits![j] !== D * sum(meta.recv, j * L, (j + 1) * L))
            bad.push(
              `${where}: receives ${dispatch.outSplits![j]} from EP rank ${j}, counts say ${D}·${sum(meta.recv, j * L, (j + 1) * L)}`,
            );
          if (combine.inSplits![j] !== dispatch.outSplits![j] || combine.outSplits![j] !== dispatch.inSplits![j])
            bad.push(`${where}: combine splits are not dispatch's reversed`);
        }
      } else if (c.dispatch === 'allgather-padded') {
        // recv: P×E rows per (source, expert); every source routes N·K rows; rows are padded to the max source.
        const rows = Array.from({ length: P }, (_, i) => sum(meta.recv, i * E, (i + 1) * E));
        if (rows.some((x) => x !== N * K)) bad.push(`${where}: rows per source ${rows}, expected ${N * K} each`);
        if (dispatch.op !== 'all_gather' || dispatch.inNelems !== Math.max(...rows) * D)
          bad.push(`${where}: dispatch gathers ${dispatch.inNelems}, counts say ${Math.max(...rows)}·${D}`);
        const perOwner = Array.from({ length: P }, (_, j) =>
          Array.from({ length: P }, (_, i) => sum(meta.recv, i * E + j * L, i * E + (j + 1) * L)).reduce(
            (a, b) => a + b,
            0,
          ),
        );
        if (combine.inNelems !== Math.max(...perOwner) * D)
          bad.push(
            `${where}: combine gathers ${combine.inNelems}, counts say max rows per owner ${Math.max(...perOwner)}·${D}`,
          );
      } else {
        // routing ids of every token of every EP rank, then the unrouted tokens (N·D each).
        if (meta.recv.length !== P * N * K || meta.send.length !== N * K)
          bad.push(`${where}: routing ids ${meta.send.length}/${meta.recv.length}, expected ${N * K}/${P * N * K}`);
        if (meta.recv.some((x) => x < 0 || x >= E)) bad.push(`${where}: an expert id out of range`);
        if (dispatch.inNelems !== N * D)
          bad.push(`${where}: dispatch gathers ${dispatch.inNelems} elements, expected N·D = ${N * D}`);
        if (combine.op !== 'reduce_scatter' || combine.outNelems !== N * D)
          bad.push(`${where}: combine returns ${combine.outNelems}, expected ${N * D}`);
      }
    }
    if (metas.length) bad.push(`rank ${r.rank}: ${metas.length} metadata records without an observed collective`);
  }
  if (P > 1 && checked === 0) bad.push('no MoE metadata exchange was observed');
  return bad;
}

async function runCase(c: Case, run: Case['runs'][number]) {
  const inv = new CollectiveInvariants();
  const world = createInprocWorld(c.layout.ranks, {
    seed: run.seed,
    faults: run.faults,
    timeoutMs: 20_000,
    observer: inv,
  });
  const res = await runRanks(world, rankMain, argsOf(c));
  inv.finish();
  const failed = res.outcomes.filter((o) => !o.ok);
  if (failed.length)
    throw new Error(
      `${c.describe} seed ${run.seed}: ${failed.map((f) => (f as { error: string }).error).join('; ')}\n${res.diagnosis ?? ''}`,
    );
  return { inv, results: res.outcomes.map((o) => (o as { value: InvariantResult }).value) };
}

const bitsEqual = (a: Float32Array, b: Float32Array) =>
  a.length === b.length &&
  Buffer.compare(
    Buffer.from(a.buffer, a.byteOffset, a.byteLength),
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  ) === 0;

describe(`randomized schedules on inproc (${CASES} jobs × ${SEEDS_PER_CASE} scheduler seeds, base seed ${BASE_SEED})`, () => {
  it('the checker flags a rank that completes a collective another member has not started, and mismatched a2a splits', () => {
    const inv = new CollectiveInvariants();
    const comm = (rank: number) => ({ name: 'ep', ranks: [0, 1], rank }) as unknown as Communicator;
    const entry = (seq: number, inSplits: number[], outSplits: number[], state: FlightEntry['state'] = 'started') =>
      ({
        group: 'ep',
        groupRanks: [0, 1],
        seq,
        op: 'all_to_all_v',
        dtype: 'float32',
        tag: 't',
        inNelems: inSplits[0]! + inSplits[1]!,
        outNelems: outSplits[0]! + outSplits[1]!,
        inSplits,
        outSplits,
        state,
      }) as unknown as FlightEntry;
    inv.onStart(comm(0), entry(1, [1, 2], [1, 3]));
    inv.onEnd(comm(0), entry(1, [1, 2], [1, 3], 'completed'));
    expect(inv.violations.join('\n')).toMatch(/completed before rank\(s\) 1 started it/);
    inv.onStart(comm(1), entry(1, [4, 1], [2, 1]));
    inv.onEnd(comm(1), entry(1, [4, 1], [2, 1], 'completed'));
    expect(inv.violations.join('\n')).toMatch(
      /rank 1 sends 4 to rank 0, which expects 3|rank 0 sends 2 to rank 1, which expects 4/,
    );
    inv.onStart(comm(0), entry(3, [1, 1], [1, 1]));
    expect(inv.violations.join('\n')).toMatch(/previous seq started by this rank was 1/);
  });

  it('regression: reshard policy "always" (the output unit is unsharded for backward right after its forward) completes', async () => {
    // The UNSHARD for backward reaches the output unit while its reshard stage runs; the fsdp-unit machine once
    // dropped it and every rank waited forever with no collective in flight (now it queues it).
    const c = makeCase(0);
    const job = {
      ...c,
      layout: LAYOUTS[0]!,
      reshard: 'always' as const,
      dispatch: 'a2a' as const,
      ac: { mode: 'none' } as AcMode,
      ga: 1,
      B: 2,
      S: 8,
    };
    const res = await Promise.race([
      runCase(job, { seed: 1, faults: [] }),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('reshard "always" hung')), 15_000).unref()),
    ]);
    expect(res.inv.violations).toEqual([]);
    expect(res.results[0]!.losses.every(Number.isFinite)).toBe(true);
  });

  const cases = Array.from({ length: CASES }, (_, i) => makeCase(i));
  for (const c of cases) {
    it(c.describe, { timeout: 40_000 }, async () => {
      const t0 = performance.now();
      let ref: InvariantResult[] | null = null;
      const notes: string[] = [];
      for (const run of c.runs) {
        const { inv, results } = await runCase(c, run);
        const tag = `${c.describe}, scheduler seed ${run.seed}, delays ${JSON.stringify(run.faults)}`;
        expect(inv.violations, tag).toEqual([]);
        expect(inv.collectives, tag).toBeGreaterThan(20);
        expect(inv.a2aSent, tag).toBe(inv.a2aReceived);
        expect(checkMoeCounts(c, inv, results), tag).toEqual([]);
        for (const r of results) {
          // Pool: every buffer handed out during a step came back.
          for (let s = 0; s < r.activations.after.length; s++) {
            expect(r.activations.after[s], `${tag}: rank ${r.rank} live activation bytes after step ${s + 1}`).toBe(
              r.activations.before,
            );
            expect(r.poolLive.after[s], `${tag}: rank ${r.rank} pooled buffers handed out after step ${s + 1}`).toBe(
              r.poolLive.before,
            );
          }
          // The rank's own byte counters agree with what the observer saw it send and receive.
          for (const [name, b] of Object.entries(r.bytes)) {
            const seen = inv.bytes.get(`${r.rank}/${name}`) ?? { sent: 0, received: 0 };
            expect({ name, sent: b.sent, received: b.received }, tag).toEqual({ name, ...seen });
          }
        }
        if (!ref) {
          ref = results;
          for (const l of results[0]!.losses) expect(Number.isFinite(l)).toBe(true);
          notes.push(
            `maxLead ${Math.max(...[...inv.groups.values()].map((g) => g.maxLead))}, ${inv.collectives} collectives`,
          );
          continue;
        }
        for (const r of results) {
          const want = ref[r.rank]!;
          expect(r.losses, `${tag}: rank ${r.rank} losses`).toEqual(want.losses);
          expect(r.gradNorms, `${tag}: rank ${r.rank} grad norms`).toEqual(want.gradNorms);
        }
        for (const [name, t] of Object.entries(ref[0]!.tensors!))
          expect(
            bitsEqual(results[0]!.tensors![name]!, t),
            `${tag}: ${name} bit-identical to seed ${c.runs[0]!.seed}`,
          ).toBe(true);
      }
      console.info(
        `${c.describe}: ${c.runs.length} schedules identical, ${notes.join(', ')}, ${(performance.now() - t0).toFixed(0)} ms`,
      );
    });
  }
});
