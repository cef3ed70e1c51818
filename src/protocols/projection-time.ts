// Time per step on one rank: FLOPs per kernel class (matmuls, attention, element-wise traffic) at the system's rates
// for the compute dtype, the host cost of every eager op, and an α–β cost per collective by link class (within a
// node, across nodes). EP collectives sit on the critical path (the experts wait for their rows); FSDP's
// all_gathers and reduce_scatters overlap the blocks' compute, so only what exceeds it is exposed — except on a link
// whose copies are CPU work on the compute cores (a CPU node's threads transport), where they are compute.

import type { BlockSpec, ModelSpec } from '../models/spec.ts';
import { isCheckpointed, type AcMode } from '../models/model/ac.ts';
import { blockTraffic } from './projection-elementwise.ts';
import { routedRowsPerToken, savedActivationBytes, type ComputeDtype, type StackKind } from './projection-memory.ts';
import { LARGE_GEMM_FLOP, type LinkSpec, type SystemSpec } from './system.ts';
import { MOE_PHASES, STRATEGIES, type MoeStrategy } from './strategies.ts';

export interface TimeInput {
  spec: ModelSpec;
  ac: AcMode;
  tokens: number;
  seqLen: number;
  microbatches: number;
  ep: number;
  dispatch: MoeStrategy;
  rmax: number;
  /** The EP graph cut (projection-memory.ts epGraphCut): routed experts run forward only. */
  cut: boolean;
  stack: StackKind;
  dtype: ComputeDtype;
  system: SystemSpec;
  /** Ranks sharing the device's rates (1 on a GPU; all ranks of a CPU node). */
  rateShare: number;
  /** Per group: predicted bytes per step (sent + received), collectives per step, and the link it crosses. */
  groups: { name: string; bytes: number; calls: number; link: 'intra' | 'inter'; critical: boolean }[];
  /** Parameters this rank updates (its shards), for the optimizer's traffic. */
  shardNumel: number;
  units: number;
}

export interface TimeProjection {
  seconds: {
    matmul: number;
    attention: number;
    memoryBound: number;
    opOverhead: number;
    commCritical: number;
    commExposed: number;
    total: number;
  };
  /** FLOPs this rank executes per step, by class (recompute included). */
  flops: { matmul: number; attention: number };
  ops: number;
}

/** Eager ops per block forward (a block's kernels as torchtitan's eager code launches them). */
export const OPS = {
  norm: 4,
  gqa: 14,
  mla: 22,
  denseFfn: 6,
  moeFixed: 26,
  perExpert: 7,
  shared: 6,
  epExtra: 12,
  head: 10,
  perUnitStep: 20,
} as const;

function blockMatmulParams(b: BlockSpec, D: number): { dense: number; routedPerRow: number; router: number } {
  const at = b.attn;
  let dense = 0;
  if (at.kind === 'gqa') dense += 2 * D * at.nHeads * at.headDim + 2 * D * at.nKvHeads * at.headDim;
  else {
    const dqk = at.qkNope + at.qkRope;
    dense += at.qLoraRank > 0 ? D * at.qLoraRank + at.qLoraRank * at.nHeads * dqk : D * at.nHeads * dqk;
    dense +=
      D * (at.kvLoraRank + at.qkRope) + at.kvLoraRank * at.nHeads * (at.qkNope + at.vHead) + at.nHeads * at.vHead * D;
  }
  if (b.ffn.kind === 'dense') return { dense: dense + 3 * D * b.ffn.hidden, routedPerRow: 0, router: 0 };
  return {
    dense: dense + 3 * D * b.ffn.sharedHidden,
    routedPerRow: 3 * D * b.ffn.hidden,
    router: D * b.ffn.args.num_experts,
  };
}

/** One forward GEMM shape of a block: FLOPs per call, calls per microbatch, and whether it is a routed expert's. */
interface Gemm {
  flop: number;
  calls: number;
  routed: boolean;
}

/** A block's forward GEMMs per microbatch of N tokens (their FLOPs sum to blockMatmulParams' count). */
function blockGemms(b: BlockSpec, D: number, N: number, ep: number, rmax: number): Gemm[] {
  const g: Gemm[] = [];
  const mm = (m: number, k: number, n: number, calls = 1, routed = false) => {
    if (m > 0 && k > 0 && n > 0) g.push({ flop: 2 * m * k * n, calls, routed });
  };
  const at = b.attn;
  if (at.kind === 'gqa') {
    mm(N, D, at.nHeads * at.headDim);
    mm(N, D, at.nKvHeads * at.headDim, 2);
    mm(N, at.nHeads * at.headDim, D);
  } else {
    const dqk = at.qkNope + at.qkRope;
    if (at.qLoraRank > 0) {
      mm(N, D, at.qLoraRank);
      mm(N, at.qLoraRank, at.nHeads * dqk);
    } else mm(N, D, at.nHeads * dqk);
    mm(N, D, at.kvLoraRank + at.qkRope);
    mm(N, at.kvLoraRank, at.nHeads * (at.qkNope + at.vHead));
    mm(N, at.nHeads * at.vHead, D);
  }
  const f = b.ffn;
  if (f.kind === 'dense') mm(N, D, f.hidden, 3);
  else {
    mm(N, D, f.args.num_experts);
    mm(N, D, f.sharedHidden, 3);
    const local = f.args.num_experts / ep;
    const rowsPerExpert = (N * routedRowsPerToken(f.args.top_k, ep, rmax)) / local;
    mm(rowsPerExpert, D, f.hidden, 3 * local, true);
  }
  return g;
}

/** FLOP/s of one GEMM of `flop` FLOPs: the system's shape classes, log-log interpolated, up to the large rate. */
export function gemmRate(dev: SystemSpec['device'], dtype: ComputeDtype, flop: number): number {
  const c = dev.matmulClasses;
  if (!c) return dev.matmulFlops[dtype];
  const xs = [...c.flop, LARGE_GEMM_FLOP];
  const ys = [...c.flops[dtype], dev.matmulFlops[dtype]];
  if (flop <= xs[0]!) return ys[0]!;
  if (flop >= LARGE_GEMM_FLOP) return ys[ys.length - 1]!;
  let i = 0;
  while (flop > xs[i + 1]!) i++;
  const t = Math.log(flop / xs[i]!) / Math.log(xs[i + 1]! / xs[i]!);
  return Math.exp(Math.log(ys[i]!) + t * Math.log(ys[i + 1]! / ys[i]!));
}

function attnFlopsPerToken(b: BlockSpec, S: number): number {
  // torchtitan's per-layer attention term, forward only (2·H·head_dims·S with head_dims = 2·hd or nope+rope+v),
  // halved for the causal mask SDPA skips.
  const at = b.attn;
  const hd = at.kind === 'gqa' ? 2 * at.headDim : at.qkNope + at.qkRope + at.vHead;
  return (2 * at.nHeads * hd * S) / 2;
}

/** α–β time of a group's collectives; a link whose copies run on the compute cores gets 1/share of its β. */
const commTime = (l: LinkSpec, bytes: number, calls: number, share: number) =>
  calls * l.latencyS + (bytes / 2 / l.bytesPerS) * (l.onComputeCores ? share : 1);

export function projectTime(t: TimeInput): TimeProjection {
  const { spec, tokens: N } = t;
  const D = spec.dim;
  const sys = t.system.device;
  const share = Math.max(1, t.rateShare);
  let mmFwd = 0;
  let attnFwd = 0;
  let mmRecompute = 0;
  let attnRecompute = 0;
  let opsFwd = 0;
  let opsRecompute = 0;
  // Routed-expert matmuls and ops that have no backward under the EP graph cut.
  let mmNoBackward = 0;
  let opsNoBackward = 0;
  // Matmul seconds per microbatch at each GEMM's shape-class rate (forward, backward's two GEMMs, recompute).
  let mmSeconds = 0;
  let elementBytes = 0;
  const actBytes = savedActivationBytes(t.stack, t.dtype);
  const opSac = t.stack === 'torchtitan' && t.ac.mode === 'selective' && 'op' in t.ac;
  for (const b of spec.blocks) {
    const p = blockMatmulParams(b, D);
    const rows = b.ffn.kind === 'moe' ? N * routedRowsPerToken(b.ffn.args.top_k, t.ep, t.rmax) : 0;
    const mm = 2 * N * (p.dense + p.router) + 2 * rows * p.routedPerRow;
    const at = N * attnFlopsPerToken(b, t.seqLen);
    let ops = OPS.norm + (b.attn.kind === 'gqa' ? OPS.gqa : OPS.mla);
    if (b.ffn.kind === 'dense') ops += OPS.denseFfn;
    else {
      const local = b.ffn.args.num_experts / t.ep;
      ops +=
        OPS.moeFixed + local * OPS.perExpert + (b.ffn.sharedHidden > 0 ? OPS.shared : 0) + (t.ep > 1 ? OPS.epExtra : 0);
      if (t.cut) {
        mmNoBackward += 2 * rows * p.routedPerRow;
        opsNoBackward += local * OPS.perExpert + OPS.epExtra;
      }
    }
    mmFwd += mm;
    attnFwd += at;
    const recomputed = isCheckpointed(b.layerId, t.ac);
    for (const gm of blockGemms(b, D, N, t.ep, t.rmax)) {
      const passes = (gm.routed && t.cut ? 1 : 3) + (recomputed ? (opSac ? 0.5 : 1) : 0);
      mmSeconds += (passes * gm.calls * gm.flop) / gemmRate(sys, t.dtype, gm.flop);
    }
    opsFwd += ops;
    if (recomputed) {
      // op-level SAC keeps every other matmul output and SDPA's: about half the matmuls run again, no attention.
      mmRecompute += opSac ? mm / 2 : mm;
      attnRecompute += opSac ? 0 : at;
      opsRecompute += ops;
    }
    // Element-wise kernels: forward, backward (about twice the forward), and forward again where recomputed.
    const tr = blockTraffic(b, D, t.ep, t.rmax);
    const passes = 3 + (recomputed ? 1 : 0);
    const routedPasses = (t.cut ? 1 : 3) + (recomputed ? 1 : 0);
    elementBytes += N * (actBytes * (passes * tr.fwd + routedPasses * tr.routedFwd) + 4 * passes * tr.fp32Fwd);
  }
  const V = spec.vocabSize;
  mmFwd += 2 * N * D * V;
  mmSeconds += (3 * 2 * N * D * V) / gemmRate(sys, t.dtype, 2 * N * D * V);
  opsFwd += OPS.head;
  elementBytes += 4 * N * V * 4;
  const mb = t.microbatches;
  const matmulFlops = mb * (3 * mmFwd - 2 * mmNoBackward + mmRecompute);
  const attentionFlops = mb * (3 * attnFwd + attnRecompute);
  const ops = mb * (3 * opsFwd - 2 * opsNoBackward + opsRecompute) + OPS.perUnitStep * t.units;
  // AdamW reads param, grad, m, v and writes param, m, v (fp32).
  elementBytes = mb * elementBytes + 28 * t.shardNumel;
  const seconds = {
    matmul: mb * mmSeconds * share,
    attention: (attentionFlops * share) / sys.attentionFlops[t.dtype],
    memoryBound: (elementBytes * share) / sys.memoryBytesPerS,
    opOverhead: ops * sys.opOverheadS,
    commCritical: 0,
    commExposed: 0,
    total: 0,
  };
  const compute = seconds.matmul + seconds.attention + seconds.memoryBound + seconds.opOverhead;
  let overlapped = 0;
  for (const g of t.groups) {
    const link = t.system.links[g.link];
    const s = commTime(link, g.bytes, g.calls, share);
    // Copies on the compute cores are compute: nothing is left to overlap them with.
    if (g.critical || link.onComputeCores) seconds.commCritical += s;
    else overlapped += s;
  }
  seconds.commExposed = Math.max(0, overlapped - compute);
  seconds.total = compute + seconds.commCritical + seconds.commExposed;
  return { seconds, flops: { matmul: matmulFlops, attention: attentionFlops }, ops };
}

/** Collectives per MoE layer per microbatch of a strategy: forward + backward, and the forward again if recomputed. */
export function epCallsPerLayer(s: MoeStrategy, recomputed = false, cut = false): number {
  const n = (phases: readonly (typeof MOE_PHASES)[number][]) =>
    phases.reduce((a, p) => a + STRATEGIES[s].phases[p].length, 0);
  const fwd = n(['exchangeCounts', 'dispatch', 'combine']);
  return (cut ? fwd : n(MOE_PHASES)) + (recomputed ? fwd : 0);
}
