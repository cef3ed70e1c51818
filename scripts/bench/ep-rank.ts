// Rank program of `npm run bench:ep` (and bench:seed / bench:trace helpers): runs on every rank of an inproc,
// threads or mpi world (src/comm/launch.ts, src/comm/mpi/spawn.ts).
//
//   mode "layer": one MoE layer of the model (the first MoE block) driven through the ExpertShard actor with a
//     dispatch strategy over the whole world as the EP group: forward + backward per rep, wall time and the EP
//     communicator's byte counters per rep, and the routing (counts per expert of every rank) that the byte model
//     moeBytes needs. The layer's parameters are the rank's own (its E/P local experts, a full router).
//   mode "train": RankHost train steps on a fixed synthetic global batch (sharded by the mesh's batch dim), with
//     a barrier before each timed step; step wall times, comm bytes per group per step, the PhaseTimes breakdown
//     (compute states, reduce, optimizer, time with a collective in flight) and the rank's tracked memory peak.
import type { RankContext } from '../../src/comm/launch.ts';
import type { Communicator } from '../../src/comm/communicator.ts';
import { RankHost, type RankJob } from '../../src/actors/rank-host.ts';
import { ExpertShard } from '../../src/actors/expert/shard.ts';
import { startExpertSystem } from '../../src/actors/expert/alone.ts';
import type { ResolvedModelConfig } from '../../src/models/config.ts';
import { Model, type Microbatch } from '../../src/models/model/model.ts';
import type { MoeStrategy } from '../../src/protocols/strategies.ts';
import { getKernels } from '../../src/tensor/kernels.ts';
import { kernelsFor, type ParamDtype } from '../../src/tensor/precision.ts';
import { PhaseTimes } from '../../src/train/phase-times.ts';

export interface LayerArgs {
  mode: 'layer';
  model: ResolvedModelConfig;
  strategy: MoeStrategy;
  /** Tokens per rank. */
  N: number;
  reps: number;
  warmup: number;
  threads: number;
  /** Compute dtype of the layer (bfloat16: rows move as bf16). Default float32. */
  paramDtype?: ParamDtype;
}

export interface LayerResult {
  rank: number;
  /** forward + backward wall ms per rep, and the two halves. */
  ms: number[];
  fwdMs: number[];
  bwdMs: number[];
  /** EP communicator bytes (sent, received) per rep. */
  sent: number[];
  received: number[];
  calls: number[];
  /** counts[rep][src·E + e]: tokens·k of rank src routed to expert e in that rep. */
  counts: number[][];
}

export interface TrainArgs {
  mode: 'train';
  job: RankJob;
  /** Global batch (sequences) and sequence length. */
  B: number;
  S: number;
  steps: number;
  warmup: number;
}

export interface TrainResult {
  rank: number;
  stepMs: number[];
  /** Bytes (sent + received) per group per timed step, summed over the timed steps. */
  bytesByGroup: Record<string, number>;
  phasesMs: Record<string, number>;
  peakBytes: number;
  peakByCategory: Record<string, number>;
  tokensPerStep: number;
}

export type EpRankArgs = LayerArgs | TrainArgs;
export type EpRankResult = LayerResult | TrainResult;

function rand(n: number, seed: number, amp: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    // Sum of two uniforms: a cheap bell shape, so router scores are not all tied.
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = s / 4294967296;
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (u + s / 4294967296 - 1) * amp;
  }
  return a;
}

async function layerMain(ctx: RankContext<LayerArgs>): Promise<LayerResult> {
  const a = ctx.args;
  const k = getKernels();
  k.setNumThreads(a.threads);
  const ep: Communicator = ctx.world;
  const P = ep.size;
  const E = a.model.args.moe_args.num_experts;
  const model = Model.build(a.model, {
    seed: 0,
    kernels: kernelsFor(k, a.paramDtype ?? 'float32'),
    experts: { start: (ctx.rank * E) / P, count: E / P },
  });
  const moe = model.moeLayers()[0];
  if (!moe) throw new Error('bench:ep: the model has no MoE layer');
  const failure = { first: undefined };
  const shard = new ExpertShard(model.rt, ep, a.strategy, failure);
  const sys = startExpertSystem(shard, { layers: () => model.moeLayers(), ac: { mode: 'none' }, loss: ep, failure });
  const D = moe.D;
  const x = rand(a.N * D, 1000 + ctx.rank, 1.7);
  const dOut = rand(a.N * D, 2000 + ctx.rank, 1e-3);
  const local = new Float32Array(E);
  const all = new Float32Array(E * P);
  const r: LayerResult = {
    rank: ctx.rank,
    ms: [],
    fwdMs: [],
    bwdMs: [],
    sent: [],
    received: [],
    calls: [],
    counts: [],
  };
  for (let i = 0; i < a.warmup + a.reps; i++) {
    moe.buffers.tokensPerExpert.fill(0);
    await ep.barrier({ tag: 'bench rep' });
    const b0 = { ...ep.bytes };
    const t0 = performance.now();
    const out = await shard.forward(sys.expert, moe, x, a.N, 0, 'forward');
    const t1 = performance.now();
    const dx = await shard.backward(sys.expert, moe.layerId, 0, dOut);
    const t2 = performance.now();
    const b1 = { ...ep.bytes };
    model.rt.pool.release(out);
    model.rt.pool.release(dx);
    local.set(moe.buffers.tokensPerExpert);
    await ep.allGather(local, all, { tag: 'bench counts' });
    if (i < a.warmup) continue;
    r.ms.push(t2 - t0);
    r.fwdMs.push(t1 - t0);
    r.bwdMs.push(t2 - t1);
    r.sent.push(b1.sent - b0.sent);
    r.received.push(b1.received - b0.received);
    r.calls.push(b1.calls - b0.calls);
    r.counts.push([...all]);
  }
  sys.stop();
  model.zeroGrads();
  return r;
}

/** A deterministic global batch of B sequences (next-token labels); bench:model draws its batches with it too. */
export function syntheticBatch(
  V: number,
  B: number,
  S: number,
  seed = 12345,
): { tokens: Int32Array; labels: Int32Array } {
  let s = seed >>> 0;
  const tokens = new Int32Array(B * S);
  for (let i = 0; i < tokens.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    tokens[i] = s % V;
  }
  const labels = new Int32Array(B * S);
  for (let r = 0; r < B; r++) for (let j = 0; j < S; j++) labels[r * S + j] = tokens[r * S + ((j + 1) % S)]!;
  return { tokens, labels };
}

async function trainMain(ctx: RankContext<TrainArgs>): Promise<TrainResult> {
  const a = ctx.args;
  const phases = new PhaseTimes();
  const host = await RankHost.create(ctx.world, a.job, phases);
  try {
    const { index, degree } = host.mesh.batch;
    if (a.B % degree !== 0) throw new Error(`global batch ${a.B} does not split over ${degree} data-parallel ranks`);
    const per = a.B / degree;
    const V = a.job.model.args.vocab_size;
    const batches: Microbatch[] = [0, 1].map((j) => {
      const g = syntheticBatch(V, a.B, a.S, 12345 + j);
      return {
        B: per,
        S: a.S,
        tokens: g.tokens.slice(index * per * a.S, (index + 1) * per * a.S),
        labels: g.labels.slice(index * per * a.S, (index + 1) * per * a.S),
      };
    });
    for (let i = 0; i < a.warmup; i++) await host.step([batches[i % 2]!]);
    host.alloc.resetPeak();
    phases.take();
    const before = host.bytesByGroup();
    const stepMs: number[] = [];
    for (let i = 0; i < a.steps; i++) {
      await ctx.world.barrier({ tag: 'bench step' });
      const t0 = performance.now();
      await host.step([batches[i % 2]!]);
      stepMs.push(performance.now() - t0);
    }
    const after = host.bytesByGroup();
    const bytesByGroup: Record<string, number> = {};
    for (const [g, c] of Object.entries(after))
      bytesByGroup[g] = c.sent + c.received - ((before[g]?.sent ?? 0) + (before[g]?.received ?? 0));
    const mem = host.alloc.stats();
    return {
      rank: ctx.rank,
      stepMs,
      bytesByGroup,
      phasesMs: phases.take(),
      peakBytes: mem.peakTotal,
      peakByCategory: { ...mem.peak },
      tokensPerStep: per * a.S,
    };
  } finally {
    await host.close();
  }
}

export async function rankMain(ctx: RankContext<EpRankArgs>): Promise<EpRankResult> {
  if (ctx.args.mode === 'layer') return layerMain(ctx as RankContext<LayerArgs>);
  return trainMain(ctx as RankContext<TrainArgs>);
}
