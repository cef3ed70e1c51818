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
import { formatMemoryLine, projectMemory, type MemoryAssumptions, type MemoryProjection } from './projection-memory.ts';
import { DISPATCH_STRATEGIES, moeBytes, MOE_PHASES, STRATEGIES, strategyBlocker, type DispatchStrategy, type MoeStrategy } from './strategies.ts';

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
export const LOCAL_MEMORY_ASSUMPTIONS: MemoryAssumptions = { stack: 'moe-actors', computeDtype: 'float32', rmax: 1, allocatorFactor: 1, unshardedInFlight: 1 };

export interface Decision<T> {
  choice: T;
  forced: boolean;
  why: string;
}

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
  dispatch: Decision<MoeStrategy>;
  /** Per strategy: why it can or cannot run, and its predicted bytes per MoE layer (forward + backward). */
  candidates: { strategy: DispatchStrategy; blocker: string | null; bytesPerLayer: number }[];
  gradReduce: Decision<GradReduce>;
  units: PlanUnit[];
  memory: MemoryProjection & { assumptions: MemoryAssumptions };
  params: ReturnType<typeof countParams>;
  flopsPerToken: number;
  /** Predicted logical bytes (sent + received) per step per group name, for one rank. */
  bytesPerStep: Record<string, number>;
  /** [training] mixed_precision_param / _reduce: the element size the bytes above were counted with. */
  precision: { param: 'float32' | 'bfloat16'; reduce: 'float32' | 'bfloat16' };
  warnings: string[];
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

export function makePlan(input: PlanInput): Plan {
  const spec = buildModelSpec(input.model);
  const moeBlocks = spec.blocks.filter((b) => b.ffn.kind === 'moe');
  const moe = moeBlocks[0]?.ffn.kind === 'moe' ? moeBlocks[0].ffn : null;
  const layout = planMesh(input.degrees, input.worldSize, { numExperts: moe?.args.num_experts, seqLen: input.seqLen });
  const profile = profileByName(input.profile);
  const caps = narrow(input.transportCaps, profile.caps);
  const backend = `${input.transport}/${profile.name}`;
  const warnings: string[] = [];
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
  const candidates = DISPATCH_STRATEGIES.map((s) => ({ strategy: s, blocker: strategyBlocker(s, caps), bytesPerLayer: layerBytes(s) }));
  let dispatch: Decision<MoeStrategy>;
  if (!moe || P === 1) {
    dispatch = { choice: 'local', forced: false, why: moe ? 'ep = 1: every rank holds every expert, nothing to dispatch' : 'dense model: no MoE layers' };
    if (input.dispatch !== 'auto' && moe) warnings.push(`[comm] dispatch = "${input.dispatch}" has no effect with expert_parallel_degree = 1`);
  } else if (input.dispatch !== 'auto') {
    const c = candidates.find((x) => x.strategy === input.dispatch)!;
    if (c.blocker) {
      const ok = candidates.filter((x) => !x.blocker).map((x) => `"${x.strategy}"`);
      throw new PlanError(
        `[comm] dispatch = "${input.dispatch}" cannot run on backend ${backend}: ${c.blocker}. ` +
          (ok.length ? `Use ${ok.join(' or ')}, or dispatch = "auto".` : 'No dispatch strategy can run on this backend.'),
      );
    }
    dispatch = { choice: c.strategy, forced: true, why: `forced by [comm] dispatch (${STRATEGIES[c.strategy].summary})` };
  } else {
    const ok = candidates.filter((x) => !x.blocker).sort((a, b) => a.bytesPerLayer - b.bytesPerLayer);
    if (ok.length === 0) {
      throw new PlanError(`no EP dispatch strategy can run on backend ${backend}: ${candidates.map((c) => c.blocker).join('; ')}. Set expert_parallel_degree = 1.`);
    }
    const best = ok[0]!;
    const ruledOut = candidates.filter((c) => c.blocker).map((c) => `${c.strategy} (${c.blocker})`);
    dispatch = {
      choice: best.strategy,
      forced: false,
      why:
        `fewest predicted bytes per MoE layer among the strategies ${backend} can run ` +
        `(${ok.map((c) => `${c.strategy} ${fmtBytes(c.bytesPerLayer)}`).join(', ')})` +
        (ruledOut.length ? `; ruled out: ${ruledOut.join('; ')}` : ''),
    };
  }

  // ---- gradient reduction ----
  const f = input.divideFactor;
  const me = 0;
  const multiNode = spansNodes(layout, 'fsdp', me, input.ranksPerNode) || spansNodes(layout, 'efsdp', me, input.ranksPerNode);
  const premulOk = caps.premulSum === 'yes' || (caps.premulSum === 'single-node' && !multiNode);
  const premulWhy =
    caps.premulSum === 'no' ? `${backend} has no PREMUL_SUM` : caps.premulSum === 'single-node' && multiNode ? `${backend} has PREMUL_SUM only within a node and the FSDP group spans nodes` : '';
  let gradReduce: Decision<GradReduce>;
  if (input.gradReduce !== 'auto') {
    if (input.gradReduce === 'premul-sum' && !premulOk) {
      throw new PlanError(`[comm] grad_reduce = "premul-sum" cannot run: ${premulWhy}. Use grad_reduce = "sum-divide" (SUM, then divide) or "auto".`);
    }
    if (input.gradReduce === 'sum' && f !== 1) {
      throw new PlanError(`[comm] grad_reduce = "sum" ignores gradient_divide_factor = ${f}; use "sum-divide", "premul-sum" or "auto" (or gradient_divide_factor = 1)`);
    }
    gradReduce = { choice: input.gradReduce, forced: true, why: 'forced by [comm] grad_reduce' };
  } else if (f === 1) {
    gradReduce = {
      choice: 'sum',
      forced: false,
      why: 'gradient_divide_factor = 1: torchtitan divides the loss by the global valid-token count, so FSDP reduces with a plain SUM (no PREMUL_SUM needed on any backend)',
    };
  } else if (premulOk) {
    gradReduce = { choice: 'premul-sum', forced: false, why: `${backend} supports PREMUL_SUM: each rank's contribution is pre-multiplied by 1/${f} inside the reduction` };
  } else {
    gradReduce = { choice: 'sum-divide', forced: false, why: `${premulWhy}: reduce with SUM, then divide by ${f} locally (the Aurora report's fix)` };
  }

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
    units.push({ id, numel, group, groupSize, shard: Math.ceil(numel / groupSize), reshardAfterForward: reshardAfterForward(input.reshard, { isOutput: id === UNIT_HEAD }) });
  }
  const assumptions: MemoryAssumptions = { ...LOCAL_MEMORY_ASSUMPTIONS, ...input.memory };
  const memory = {
    ...projectMemory({
      spec, units, ac: input.ac, tokens: T, seqLen: input.seqLen, ep: P, dispatch: dispatch.choice,
      replicas: d.dp_replicate, plainSum: gradReduce.choice === 'sum', assumptions,
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
    const forwardBytes = (['exchangeCounts', 'dispatch', 'combine'] as const).reduce((a, p) => a + fwd[p].sent + fwd[p].received, 0);
    for (const b of moeBlocks) add('ep', mbs * (layerBytes(dispatch.choice) + (isCheckpointed(b.layerId, input.ac) ? forwardBytes : 0)));
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

export function fmtBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 2)} ${u[i]}`;
}

/** The plan as the `plan` command prints it. */
export function formatPlan(p: Plan): string {
  const d = p.layout.degrees;
  const lines: string[] = [];
  lines.push(`mesh: world ${p.layout.worldSize} = dp_replicate ${d.dp_replicate} × dp_shard ${d.dp_shard} (ep ${d.ep} borrows from dp_shard; efsdp ${p.layout.sizes.efsdp})`);
  lines.push(`backend: ${p.backend}`);
  lines.push(`model: ${fmtCount(p.params.total)} parameters (${fmtCount(p.params.active)} active), ${fmtCount(p.flopsPerToken)} FLOPs/token`);
  lines.push('');
  lines.push(`EP dispatch: ${p.dispatch.choice} — ${p.dispatch.why}`);
  for (const c of p.candidates) lines.push(`  ${c.strategy.padEnd(17)} ${c.blocker ? `cannot run: ${c.blocker}` : `${fmtBytes(c.bytesPerLayer)} per MoE layer per microbatch (fwd + bwd, sent + received)`}`);
  lines.push(`gradient reduction: ${p.gradReduce.choice} — ${p.gradReduce.why}`);
  lines.push('');
  lines.push('per rank memory (bytes):');
  const m = p.memory;
  lines.push(`  ${formatMemoryLine(m)}`);
  lines.push('units:');
  for (const u of p.units) lines.push(`  ${u.id.padEnd(24)} ${fmtCount(u.numel).padStart(8)} params over ${u.group} (${u.groupSize}) → shard ${fmtCount(u.shard)}${u.reshardAfterForward ? ', reshard after forward' : ''}`);
  const pr = p.precision;
  lines.push(
    `bytes per step per group (this rank, sent + received; params ${pr.param}: all-gathers and EP rows at ${pr.param === 'bfloat16' ? 2 : 4} bytes, gradient reduce_scatters at ${pr.reduce === 'bfloat16' ? 2 : 4}):`,
  );
  for (const [g, b] of Object.entries(p.bytesPerStep)) lines.push(`  ${g.padEnd(22)} ${fmtBytes(b)}`);
  for (const w of p.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}
