// `moe-actors project`: the planner's plan (its memory model and byte model, the same code plan.txt prints) under a
// system's assumptions, plus time per step → TPS per rank and MFU, with every assumption on one line.

import type { MeshDim } from '../comm/mesh-layout.ts';
import { isCheckpointed } from '../models/model/ac.ts';
import { buildModelSpec, type BlockSpec } from '../models/spec.ts';
import { makePlan, spansNodes, type Plan, type PlanInput } from './planner.ts';
import {
  dtypeBytes,
  epGraphCut,
  formatMemoryLine,
  MEMORY_CATEGORIES,
  type ComputeDtype,
  type MemoryAssumptions,
  type MemoryCategory,
} from './projection-memory.ts';
import { epCallsPerLayer, projectTime, type TimeProjection } from './projection-time.ts';
import type { SystemSpec } from './system.ts';

export interface ProjectOptions {
  system: SystemSpec;
  /** Overrides the system's (and the config's) compute dtype. */
  computeDtype?: ComputeDtype;
  /** Overrides the system's routing-imbalance assumption. */
  rmax?: number;
  /** The torchtitan run used torch.compile (its [compile] enable; moe-actors' configs have no such field). */
  torchCompile?: boolean;
}

export interface Projection {
  plan: Plan;
  system: SystemSpec;
  assumptionsUsed: MemoryAssumptions;
  time: TimeProjection;
  tokensPerStep: number;
  tpsPerRank: number;
  mfu: number;
  peakFlopsPerRank: number;
  /** Bytes per step per group as they travel: activations and unsharded parameters in the compute dtype. */
  wireBytes: Record<string, number>;
  /** The small collectives every step issues besides the byte model's (counts, loss, grad norm), per group. */
  scalarBytes: Record<string, number>;
  assumptions: string[];
}

const GIB = 2 ** 30;

export function project(input: PlanInput, o: ProjectOptions): Projection {
  const sys = o.system;
  const configDtype = input.memory?.computeDtype ?? 'float32';
  const computeDtype = o.computeDtype ?? (sys.stack.computeDtype === 'config' ? configDtype : sys.stack.computeDtype);
  const a: MemoryAssumptions = {
    stack: sys.stack.kind,
    computeDtype,
    rmax: o.rmax ?? sys.stack.rmax,
    allocatorFactor: sys.stack.allocatorFactor,
    unshardedInFlight: sys.stack.unshardedInFlight,
    torchCompile: o.torchCompile ?? false,
  };
  const plan = makePlan({ ...input, memory: a });
  const spec = buildModelSpec(input.model);
  const layout = plan.layout;
  const mbs = input.microbatches;
  const moeBlocks = spec.blocks.filter((b) => b.ffn.kind === 'moe');
  const sharded = plan.units.filter((u) => u.groupSize > 1);
  const cut = epGraphCut(a.stack, plan.dispatch.choice, plan.layout.degrees.ep, a.torchCompile);
  const groups = Object.entries(plan.bytesPerStep).flatMap(([name, bytes]) => {
    const base = name.replace(/_reduce$/, '') as MeshDim;
    if ((layout.sizes[base] ?? 1) <= 1) return [];
    let calls: number;
    // Under the EP graph cut only the forward collectives run (again when recomputed): the padded all_gathers move
    // the same rows forward and backward, so the bytes scale with the forward share of the layers' passes.
    let share = 1;
    if (name === 'ep') {
      calls =
        mbs *
        moeBlocks.reduce(
          (s, b) => s + epCallsPerLayer(plan.dispatch.choice, isCheckpointed(b.layerId, input.ac), cut),
          0,
        );
      if (cut) {
        const rec = moeBlocks.map((b) => (isCheckpointed(b.layerId, input.ac) ? 1 : 0));
        share = rec.reduce<number>((s, r) => s + 1 + r, 0) / rec.reduce<number>((s, r) => s + 2 + r, 0);
      }
    } else if (name.endsWith('_reduce'))
      calls = mbs * plan.units.filter((u) => name === 'dp_replicate_reduce' || u.group === base).length;
    else calls = mbs * sharded.filter((u) => u.group === base).reduce((s, u) => s + (u.reshardAfterForward ? 2 : 1), 0);
    const link: 'intra' | 'inter' = spansNodes(layout, base, 0, input.ranksPerNode) ? 'inter' : 'intra';
    // The byte model counts fp32 rows and parameters; activations (EP) and FSDP's unsharded parameters travel in
    // the compute dtype, gradients are reduced in fp32 (torchtitan's mixed_precision_reduce).
    const wire = share * (name.endsWith('_reduce') ? bytes : (bytes * dtypeBytes(computeDtype)) / 4);
    // EP collectives gate the experts. FSDP's all_gathers: torchtitan prefetches them behind compute; moe-actors
    // issues them in program order on the main path (docs/architecture.md), so there they are on the critical path.
    const critical = name === 'ep' || (a.stack === 'moe-actors' && !name.endsWith('_reduce'));
    return [{ name, bytes: wire, calls, link, critical }];
  });
  const ranksOnNode = input.ranksPerNode > 0 ? Math.min(input.ranksPerNode, input.worldSize) : input.worldSize;
  const rateShare = sys.device.ranksPerDevice === 0 ? ranksOnNode : sys.device.ranksPerDevice;
  const tokens = input.localBatch * input.seqLen;
  const time = projectTime({
    spec,
    ac: input.ac,
    tokens,
    seqLen: input.seqLen,
    microbatches: mbs,
    ep: layout.degrees.ep,
    dispatch: plan.dispatch.choice,
    rmax: a.rmax,
    cut,
    stack: a.stack,
    dtype: computeDtype,
    system: sys,
    rateShare,
    groups,
    shardNumel: plan.units.reduce((s, u) => s + u.shard, 0),
    units: plan.units.length,
  });
  const tokensPerStep = tokens * mbs;
  const tpsPerRank = tokensPerStep / time.seconds.total;
  const peakFlopsPerRank = sys.device.peakFlops[computeDtype] / rateShare;
  const mfu = (tpsPerRank * plan.flopsPerToken) / peakFlopsPerRank;
  const d = sys.device;
  const assumptions = [
    `system ${sys.name} (${sys.source}); stack ${a.stack}: what it keeps on the device follows ${a.stack === 'torchtitan' ? "torchtitan's FSDP2 (a compute-dtype copy of every unit, fp32 reduction) and op-level SAC (every other matmul output saved)" : "moe-actors' runtime (fp32 buffers; op-level SAC recomputes whole blocks)"}`,
    `compute dtype ${computeDtype}${o.computeDtype ? ' (--compute-dtype)' : sys.stack.computeDtype === 'config' ? ' ([training] mixed_precision_param)' : ` (the system's default for ${sys.name})`}; master weights, gradients and AdamW moments fp32`,
    `routing imbalance Rmax = ${a.rmax}: the busiest EP rank receives ${a.rmax}× the mean rows (sets EP buffers and the experts' critical-path FLOPs)`,
    `allocator factor ${a.allocatorFactor}: what is allocated and freed every step (unsharded copies, full gradients, activations, EP buffers) reserves ${a.allocatorFactor}× its live bytes (caching, rounding, fragmentation); the sharded state is exact`,
    ...(a.stack === 'torchtitan' && plan.dispatch.choice === 'allgather-padded' && layout.degrees.ep > 1
      ? [
          cut
            ? "EP graph cut (eager torchtitan, the seed's XPUExpertParallel): c10d all_gathers outside autograd, so routed experts keep no activations, get no gradient and run no backward; gathered buffers live within the layer's forward"
            : 'torch.compile: dynamo traces the EP all_gathers as functional collectives that autograd records, so expert activations and gathered buffers stay with each layer until its backward',
        ]
      : []),
    `${a.unshardedInFlight} block group(s) unsharded at once while computing; units that do not reshard after forward stay unsharded`,
    `a block in backward holds its saved tensors plus a gradient working set of 0.25× them; the loss keeps ${a.stack === 'torchtitan' ? 'fp32 log-probs, their fp32 gradient and the compute-dtype logits' : 'fp32 logits, turned into their gradient in place'}`,
    `matmuls at ${(d.matmulFlops[computeDtype] / 1e12).toFixed(3)} TFLOP/s${d.matmulClasses ? ` (GEMMs of ${d.matmulClasses.flop.map((f, i) => `${(f / 1e6).toFixed(1)} MFLOP at ${(d.matmulClasses!.flops[computeDtype][i]! / 1e12).toFixed(3)}`).join(', ')} TFLOP/s, interpolated between)` : ''}, attention at ${(d.attentionFlops[computeDtype] / 1e12).toFixed(3)} TFLOP/s, element-wise kernels (their reads and writes counted kernel by kernel: norms, RoPE, residual adds, SwiGLU, the routed rows' permutation and combine; backward twice the forward) at ${(d.memoryBytesPerS / 1e9).toFixed(1)} GB/s per device${rateShare > 1 ? `, shared by ${rateShare} ranks` : ''}`,
    `${time.ops.toFixed(0)} eager ops per step at ${(d.opOverheadS * 1e6).toFixed(1)} µs each (host dispatch + launch; for-loop experts: ${'7'} ops per local expert per forward)`,
    `collectives: α–β per link (intra ${(sys.links.intra.latencyS * 1e6).toFixed(1)} µs, ${(sys.links.intra.bytesPerS / 1e9).toFixed(1)} GB/s; inter ${(sys.links.inter.latencyS * 1e6).toFixed(1)} µs, ${(sys.links.inter.bytesPerS / 1e9).toFixed(1)} GB/s), half the logical bytes received; EP on the critical path${a.stack === 'moe-actors' ? ' and so are FSDP all_gathers (issued in program order)' : ''}, FSDP/HSDP ${a.stack === 'moe-actors' ? 'reductions' : 'collectives'} overlapped with compute (only the excess is exposed)`,
    ...(['intra', 'inter'] as const)
      .filter((k) => sys.links[k].onComputeCores)
      .map(
        (k) =>
          `${k}-node collectives copy on the compute cores: ${(sys.links[k].bytesPerS / 1e9).toFixed(1)} GB/s is the node's copy rate${rateShare > 1 ? `, shared by ${rateShare} ranks` : ''}, and their time adds to compute (none overlapped)`,
      ),
    `MFU against ${(peakFlopsPerRank / 1e12).toFixed(3)} TFLOP/s per rank (${computeDtype} peak as torchtitan counts it) with torchtitan's FLOPs per token (${plan.flopsPerToken.toExponential(3)})`,
  ];
  const wireBytes = Object.fromEntries(groups.map((g) => [g.name, g.bytes]));
  const scalarBytes = scalarCollectiveBytes(plan, spec.blocks);
  return {
    plan,
    system: sys,
    assumptionsUsed: a,
    time,
    tokensPerStep,
    tpsPerRank,
    mfu,
    peakFlopsPerRank,
    wireBytes,
    scalarBytes,
    assumptions,
  };
}

/**
 * Logical bytes (sent + received) of the step's small collectives, per group: the global valid-token count (one f64
 * all_reduce over batch), the loss and its maximum (two f64 all_reduces over loss), the tokens-per-expert counts of
 * every biased MoE layer (fp32, over loss) and the squared grad norms of both clipping groups (f64[2] over fsdp).
 */
export function scalarCollectiveBytes(plan: Plan, blocks: readonly BlockSpec[]): Record<string, number> {
  const sizes = plan.layout.sizes;
  const out: Record<string, number> = {};
  if ((sizes.batch ?? 1) > 1) out.batch = 2 * 8;
  if ((sizes.loss ?? 1) > 1) {
    const biased = blocks.filter((b) => b.ffn.kind === 'moe' && b.ffn.args.load_balance_coeff !== null);
    const E = biased[0]?.ffn.kind === 'moe' ? biased[0].ffn.args.num_experts : 0;
    out.loss = 2 * (2 * 8) + 2 * 4 * biased.length * E;
  }
  if ((sizes.fsdp ?? 1) > 1) out.fsdp = 2 * 16;
  return out;
}

export function projectionJson(p: Projection): Record<string, unknown> {
  const m = p.plan.memory;
  const byCat = Object.fromEntries(MEMORY_CATEGORIES.map((k) => [k, m.bytes[k as MemoryCategory] / GIB]));
  return {
    system: p.system.name,
    compute_dtype: p.assumptionsUsed.computeDtype,
    memory_gib_per_rank: m.total / GIB,
    memory_by_category: byCat,
    device_memory_gib: p.system.device.memoryBytes / GIB,
    fits: m.total <= p.system.device.memoryBytes,
    bytes_per_step_per_group: { ...p.plan.bytesPerStep },
    wire_bytes_per_step_per_group: { ...p.wireBytes },
    scalar_bytes_per_step_per_group: { ...p.scalarBytes },
    step_seconds: p.time.seconds.total,
    step_seconds_by_class: { ...p.time.seconds },
    tokens_per_step_per_rank: p.tokensPerStep,
    tps_per_rank: p.tpsPerRank,
    mfu: p.mfu,
    flops_per_token: p.plan.flopsPerToken,
    dispatch: p.plan.dispatch.choice,
    assumptions: p.assumptions,
  };
}

const f3 = (x: number) => x.toFixed(3);

export function formatProjection(p: Projection): string {
  const s = p.time.seconds;
  const m = p.plan.memory;
  const lines = [
    `memory per rank: ${(m.total / GIB).toFixed(2)} GiB of ${(p.system.device.memoryBytes / GIB).toFixed(0)} GiB${m.total > p.system.device.memoryBytes ? ' — DOES NOT FIT' : ''}`,
    `  ${formatMemoryLine(m)}`,
    `bytes per step per group (this rank, sent + received; the byte model's fp32 count${p.assumptionsUsed.computeDtype === 'float32' ? '' : ', and as they travel in ' + p.assumptionsUsed.computeDtype}):`,
    ...Object.entries(p.plan.bytesPerStep).map(
      ([g, b]) =>
        `  ${g.padEnd(22)} ${(b / 2 ** 20).toFixed(2)} MiB${p.wireBytes[g] !== undefined && p.wireBytes[g] !== b ? ` (${(p.wireBytes[g]! / 2 ** 20).toFixed(2)} MiB on the wire)` : ''}`,
    ),
    `time per step: ${f3(s.total)} s = matmul ${f3(s.matmul)} + attention ${f3(s.attention)} + element-wise ${f3(s.memoryBound)} + op overhead ${f3(s.opOverhead)} + EP comm ${f3(s.commCritical)} + exposed FSDP comm ${f3(s.commExposed)}`,
    `TPS per rank: ${p.tpsPerRank.toFixed(0)}   MFU: ${(100 * p.mfu).toFixed(2)}%   (EP dispatch ${p.plan.dispatch.choice})`,
    'assumptions:',
    ...p.assumptions.map((x) => `  - ${x}`),
  ];
  return lines.join('\n');
}
