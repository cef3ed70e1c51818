// The planner: from the mesh, the model and the backend's capabilities, decide before the run how the protocols
// run — the EP dispatch strategy, the FSDP gradient reduction, the reshard policy per unit — and predict what a
// rank holds and moves. A config may force a choice; a forced choice the backend cannot run is refused here,
// with the reason, instead of failing (or hanging) in the middle of a step.

import { narrow, profileByName, type Capabilities, type ProfileName } from '../comm/capabilities.ts';
import { groupOf, planMesh, type MeshDim, type MeshLayout, type ParallelDegrees } from '../comm/mesh-layout.ts';
import type { ResolvedModelConfig } from '../models/config.ts';
import { countParams, flopsPerToken } from '../models/counts.ts';
import { isCheckpointed, type AcMode } from '../models/model/ac.ts';
import { numelOf } from '../tensor/tensor.ts';
import { buildModelSpec, paramSpecs, UNIT_HEAD } from '../models/spec.ts';
import { reshardAfterForward, type GradReduce, type ReshardPolicy } from './fsdp-unit.machine.ts';
import { premulBlockerText } from './plan-format.ts';
import { projectMemory, type MemoryAssumptions, type MemoryProjection } from './projection-memory.ts';
import {
  DISPATCH_STRATEGIES,
  moeBytes,
  MOE_PHASES,
  strategyBlocker,
  type DispatchStrategy,
  type MoeStrategy,
} from './strategies.ts';

export interface PlanInput {
  model: ResolvedModelConfig;
  worldSize: number;
  degrees: Partial<ParallelDegrees>;
  /** Capabilities of the transport itself (before the profile narrows them). */
  transportCaps: Capabilities;
  transport: string;
  profile: ProfileName;
  dispatch: 'auto' | DispatchStrategy;
  gradReduce: 'auto' | GradReduce;
  divideFactor: number;
  reshard: ReshardPolicy;
  ac: AcMode;
  /** Sequences per rank per microbatch (torchtitan's local_batch_size). */
  localBatch: number;
  seqLen: number;
  /** Microbatches per step (gradient accumulation). */
  microbatches: number;
  /** Ranks per node (0: all ranks on one node). */
  ranksPerNode: number;
  /** [training] mixed_precision_param: bfloat16 halves parameter all-gathers and EP rows on the wire. Default float32. */
  paramDtype?: 'float32' | 'bfloat16';
  /** [training] mixed_precision_reduce: bfloat16 halves the FSDP gradient reduce_scatters. Default float32. */
  reduceDtype?: 'float32' | 'bfloat16';
  /** How memory is projected (stack, compute dtype, routing imbalance, allocator); default: moe-actors here. */
  memory?: Partial<MemoryAssumptions>;
}

/** moe-actors on this machine: fp32 compute, balanced routing, the tracked allocator counts live bytes. */
export const LOCAL_MEMORY_ASSUMPTIONS: MemoryAssumptions = {
  stack: 'moe-actors',
  computeDtype: 'float32',
  rmax: 1,
  allocatorFactor: 1,
  unshardedInFlight: 1,
};

/** Why the EP dispatch strategy is what it is (plan-format.ts words it). */
export type DispatchReason =
  | { kind: 'dense' }
  | { kind: 'ep1' }
  | { kind: 'forced'; strategy: DispatchStrategy }
  | {
      kind: 'fewest-bytes';
      backend: string;
      /** The strategies the backend can run, fewest bytes first. */
      ranked: { strategy: DispatchStrategy; bytesPerLayer: number }[];
      ruledOut: { strategy: DispatchStrategy; blocker: string }[];
    };

/** Why PREMUL_SUM cannot run here, or null if it can. */
export type PremulBlocker = { backend: string; kind: 'none' | 'spans-nodes' } | null;

/** Why the FSDP gradient reduction is what it is (plan-format.ts words it). */
export type GradReduceReason =
  | { kind: 'forced' }
  | { kind: 'divide-factor-1' }
  | { kind: 'premul-supported'; backend: string; factor: number }
  | { kind: 'premul-blocked'; blocker: NonNullable<PremulBlocker>; factor: number };

export interface Decision<T, R> {
  choice: T;
  forced: boolean;
  reason: R;
}

/** What the plan notices but does not refuse. */
export type PlanWarning = { kind: 'dispatch-without-ep'; dispatch: DispatchStrategy };

export interface PlanUnit {
  id: string;
  numel: number;
  group: MeshDim;
  groupSize: number;
  shard: number;
  reshardAfterForward: boolean;
}

export interface Plan {
  layout: MeshLayout;
  caps: Capabilities;
  backend: string;
  dispatch: Decision<MoeStrategy, DispatchReason>;
  /** Per strategy: why it can or cannot run, and its predicted bytes per MoE layer (forward + backward). */
  candidates: { strategy: DispatchStrategy; blocker: string | null; bytesPerLayer: number }[];
  gradReduce: Decision<GradReduce, GradReduceReason>;
  units: PlanUnit[];
  memory: MemoryProjection & { assumptions: MemoryAssumptions };
  params: ReturnType<typeof countParams>;
  flopsPerToken: number;
  /** Predicted logical bytes (sent + received) per step per group name, for one rank. */
  bytesPerStep: Record<string, number>;
  /** [training] mixed_precision_param / _reduce: the element size the bytes above were counted with. */
  precision: { param: 'float32' | 'bfloat16'; reduce: 'float32' | 'bfloat16' };
  warnings: PlanWarning[];
}

export class PlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PlanError';
  }
}

export function spansNodes(layout: MeshLayout, dim: MeshDim, rank: number, ranksPerNode: number): boolean {
  if (ranksPerNode <= 0) return false;
  const nodes = new Set(groupOf(layout, dim, rank).ranks.map((r) => Math.floor(r / ranksPerNode)));
  return nodes.size > 1;
}

type Candidate = Plan['candidates'][number];

/** The EP dispatch strategy: forced by the config (refused if the backend cannot run it), else the fewest bytes. */
export function decideDispatch(
  requested: PlanInput['dispatch'],
  ctx: { moe: boolean; ep: number; backend: string; candidates: Candidate[] },
): { decision: Decision<MoeStrategy, DispatchReason>; warnings: PlanWarning[] } {
  const { candidates, backend } = ctx;
  if (!ctx.moe || ctx.ep === 1) {
    const warnings: PlanWarning[] =
      requested !== 'auto' && ctx.moe ? [{ kind: 'dispatch-without-ep', dispatch: requested }] : [];
    return { decision: { choice: 'local', forced: false, reason: { kind: ctx.moe ? 'ep1' : 'dense' } }, warnings };
  }
  if (requested !== 'auto') {
    const c = candidates.find((x) => x.strategy === requested)!;
    if (c.blocker) {
      const ok = candidates.filter((x) => !x.blocker).map((x) => `"${x.strategy}"`);
      throw new PlanError(
        `[comm] dispatch = "${requested}" cannot run on backend ${backend}: ${c.blocker}. ` +
          (ok.length
            ? `Use ${ok.join(' or ')}, or dispatch = "auto".`
            : 'No dispatch strategy can run on this backend.'),
      );
    }
    return {
      decision: { choice: c.strategy, forced: true, reason: { kind: 'forced', strategy: c.strategy } },
      warnings: [],
    };
  }
  const ok = candidates.filter((x) => !x.blocker).sort((a, b) => a.bytesPerLayer - b.bytesPerLayer);
  if (ok.length === 0) {
    throw new PlanError(
      `no EP dispatch strategy can run on backend ${backend}: ${candidates.map((c) => c.blocker).join('; ')}. Set expert_parallel_degree = 1.`,
    );
  }
  const ruledOut = candidates.flatMap((c) => (c.blocker ? [{ strategy: c.strategy, blocker: c.blocker }] : []));
  const ranked = ok.map((c) => ({ strategy: c.strategy, bytesPerLayer: c.bytesPerLayer }));
  return {
    decision: { choice: ok[0]!.strategy, forced: false, reason: { kind: 'fewest-bytes', backend, ranked, ruledOut } },
    warnings: [],
  };
}

/** Whether the backend can pre-multiply inside the reduction for this FSDP group. */
export function premulBlocker(caps: Capabilities, backend: string, multiNode: boolean): PremulBlocker {
  if (caps.premulSum === 'no') return { backend, kind: 'none' };
  if (caps.premulSum === 'single-node' && multiNode) return { backend, kind: 'spans-nodes' };
  return null;
}

/** The FSDP gradient reduction: forced by the config (refused if it cannot run), else the cheapest that is exact. */
export function decideGradReduce(
  requested: PlanInput['gradReduce'],
  factor: number,
  backend: string,
  blocker: PremulBlocker,
): Decision<GradReduce, GradReduceReason> {
  if (requested !== 'auto') {
    if (requested === 'premul-sum' && blocker) {
      throw new PlanError(
        `[comm] grad_reduce = "premul-sum" cannot run: ${premulBlockerText(blocker)}. Use grad_reduce = "sum-divide" (SUM, then divide) or "auto".`,
      );
    }
    if (requested === 'sum' && factor !== 1) {
      throw new PlanError(
        `[comm] grad_reduce = "sum" ignores gradient_divide_factor = ${factor}; use "sum-divide", "premul-sum" or "auto" (or gradient_divide_factor = 1)`,
      );
    }
    return { choice: requested, forced: true, reason: { kind: 'forced' } };
  }
  if (factor === 1) return { choice: 'sum', forced: false, reason: { kind: 'divide-factor-1' } };
  if (!blocker) return { choice: 'premul-sum', forced: false, reason: { kind: 'premul-supported', backend, factor } };
  return { choice: 'sum-divide', forced: false, reason: { kind: 'premul-blocked', blocker, factor } };
}

export function makePlan(input: PlanInput): Plan {
  const spec = buildModelSpec(input.model);
  const moeBlocks = spec.blocks.filter((b) => b.ffn.kind === 'moe');
  const moe = moeBlocks[0]?.ffn.kind === 'moe' ? moeBlocks[0].ffn : null;
  const layout = planMesh(input.degrees, input.worldSize, { numExperts: moe?.args.num_experts, seqLen: input.seqLen });
  const profile = profileByName(input.profile);
  const caps = narrow(input.transportCaps, profile.caps);
  const backend = `${input.transport}/${profile.name}`;
  const d = layout.degrees;
  const P = d.ep;

  // ---- EP dispatch ----
  const T = input.localBatch * input.seqLen;
  const D = spec.dim;
  const K = moe?.args.top_k ?? 1;
  const E = moe?.args.num_experts ?? 1;
  const wire = input.paramDtype === 'bfloat16' ? 2 : 4;
  const shape = { P, T, Tmax: T, D, K, E, rowsIn: K * T, rowsInMax: Math.ceil(K * T * 1.0), rowBytes: wire as 2 | 4 };
  const layerBytes = (s: MoeStrategy) => {
    const b = moeBytes(s, shape);
    return MOE_PHASES.reduce((a, p) => a + b[p].sent + b[p].received, 0);
  };
  const candidates = DISPATCH_STRATEGIES.map((s) => ({
    strategy: s,
    blocker: strategyBlocker(s, caps),
    bytesPerLayer: layerBytes(s),
  }));
  const { decision: dispatch, warnings } = decideDispatch(input.dispatch, {
    moe: moe !== null,
    ep: P,
    backend,
    candidates,
  });

  // ---- gradient reduction ----
  const me = 0;
  const multiNode =
    spansNodes(layout, 'fsdp', me, input.ranksPerNode) || spansNodes(layout, 'efsdp', me, input.ranksPerNode);
  const gradReduce = decideGradReduce(
    input.gradReduce,
    input.divideFactor,
    backend,
    premulBlocker(caps, backend, multiNode),
  );
  // ---- units, memory ----
  const byUnit = new Map<string, number>();
  for (const p of paramSpecs(spec)) {
    let n = numelOf(p.shape);
    if (p.expert) n = (n / p.shape[0]!) * (p.shape[0]! / P);
    byUnit.set(p.unit, (byUnit.get(p.unit) ?? 0) + n);
  }
  const units: PlanUnit[] = [];
  for (const [id, numel] of byUnit) {
    const experts = id.endsWith('.moe.experts');
    const group: MeshDim = experts && P > 1 ? 'efsdp' : 'fsdp';
    const groupSize = layout.sizes[group];
    units.push({
      id,
      numel,
      group,
      groupSize,
      shard: Math.ceil(numel / groupSize),
      reshardAfterForward: reshardAfterForward(input.reshard, { isOutput: id === UNIT_HEAD }),
    });
  }
  const assumptions: MemoryAssumptions = { ...LOCAL_MEMORY_ASSUMPTIONS, ...input.memory };
  const memory = {
    ...projectMemory({
      spec,
      units,
      ac: input.ac,
      tokens: T,
      seqLen: input.seqLen,
      ep: P,
      dispatch: dispatch.choice,
      replicas: d.dp_replicate,
      plainSum: gradReduce.choice === 'sum',
      assumptions,
    }),
    assumptions,
  };

  // ---- bytes per step per group (one rank, sent + received, logical) ----
  const bytes: Record<string, number> = {};
  const add = (g: string, n: number) => (bytes[g] = (bytes[g] ?? 0) + n);
  const mbs = input.microbatches;
  for (const u of units) {
    if (u.groupSize > 1 || layout.degrees.dp_replicate > 1) {
      const fullWire = u.shard * u.groupSize * wire;
      const gathers = u.reshardAfterForward ? 2 : 1;
      if (u.groupSize > 1) {
        add(u.group, mbs * gathers * (u.shard * wire + fullWire));
        const red = input.reduceDtype === 'bfloat16' ? 2 : 4;
        add(`${u.group}_reduce`, mbs * (u.shard * u.groupSize * red + u.shard * red));
      }
      if (layout.degrees.dp_replicate > 1) add('dp_replicate_reduce', mbs * 2 * u.shard * 4);
    }
  }
  if (moe && P > 1) {
    // A checkpointed layer's recompute issues its forward phases again (counts included): not half the total.
    const fwd = moeBytes(dispatch.choice, shape);
    const forwardBytes = (['exchangeCounts', 'dispatch', 'combine'] as const).reduce(
      (a, p) => a + fwd[p].sent + fwd[p].received,
      0,
    );
    for (const b of moeBlocks)
      add('ep', mbs * (layerBytes(dispatch.choice) + (isCheckpointed(b.layerId, input.ac) ? forwardBytes : 0)));
  }

  return {
    layout,
    caps,
    backend,
    dispatch,
    candidates,
    gradReduce,
    units,
    memory,
    params: countParams(spec),
    flopsPerToken: flopsPerToken(spec, input.seqLen),
    bytesPerStep: bytes,
    precision: { param: input.paramDtype ?? 'float32', reduce: input.reduceDtype ?? 'float32' },
    warnings,
  };
}
