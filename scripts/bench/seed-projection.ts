// bench:seed's projection of a row with `--system local` (configs/systems/local.toml), the matmul, attention and
// element-wise rates replaced by the ones measured in the same run (node-rates.ts): memory per rank, logical bytes per step
// over the groups with more than one member (as bench:seed measures them: the byte model's plus the step's scalar
// collectives) and TPS per rank.
import type { MeshDim } from '../../src/comm/mesh-layout.ts';
import { project } from '../../src/protocols/projection.ts';
import { loadJobConfig, modelConfigOf } from '../../src/train/job-config.ts';
import { buildModelSpec } from '../../src/models/spec.ts';
import { measureNodeRates, type RateClass } from './node-rates.ts';
import { loadSystem } from '../../src/train/system-file.ts';
import { planInputOf } from '../../src/train/plan-job.ts';
import type { RunSummary } from './seed-summary.ts';
import type { SystemSpec } from '../../src/protocols/system.ts';

/**
 * GEMM shape classes of the DSV3-small rows (dim 256, 512 tokens per rank): a routed expert's (128 rows × 256 →
 * 128), an attention / shared-expert projection (512 × 256 → 256), the output head (512 × 256 → 2048), and the
 * 1024³ reference of `matmul_tflops_*`. M, K, N.
 */
export const GEMM_CLASSES: readonly [number, number, number][] = [
  [128, 256, 128],
  [512, 256, 256],
  [512, 256, 2048],
  [1024, 1024, 1024],
];

/**
 * What node-rates.ts times for a row: the GEMM classes, the row's attention (its first block's head shape, one
 * rank's microbatch) and an element-wise kernel over one rank's activations (tokens × dim).
 */
function rateClassesOf(config: string, overrides: string[]): RateClass[] {
  const cfg = loadJobConfig(config, overrides);
  const spec = buildModelSpec(modelConfigOf(cfg));
  const at = spec.blocks[0]!.attn;
  const B = cfg.training.local_batch_size;
  const S = cfg.training.seq_len;
  const head =
    at.kind === 'gqa'
      ? { H: at.nHeads, Hkv: at.nKvHeads, dk: at.headDim, dv: at.headDim }
      : { H: at.nHeads, Hkv: at.nHeads, dk: at.qkNope + at.qkRope, dv: at.vHead };
  return [
    ...GEMM_CLASSES.map(([m, k, n]) => ({ kind: 'gemm' as const, m, k, n })),
    { kind: 'attention', B, S, ...head },
    { kind: 'add', n: B * S * spec.dim },
    { kind: 'copy', n: B * S * spec.dim },
  ];
}

/** FLOPs of one call per GEMM class (GEMM_CLASSES order). */
export const GEMM_CLASS_FLOP: readonly number[] = GEMM_CLASSES.map(([m, k, n]) => 2 * m * k * n);

/** The node's rates for a row's projection, timed with one thread per each of its `ranks` ranks (node-rates.ts). */
export async function measureRowRates(config: string, overrides: string[], ranks: number): Promise<GemmClassRates> {
  const node = await measureNodeRates(rateClassesOf(config, overrides), ranks);
  const [attention, elementwise, copy] = node.slice(GEMM_CLASSES.length);
  return {
    gflopsNode: node.slice(0, GEMM_CLASSES.length).map((r) => r / 1e9),
    attentionFlopsNode: attention!,
    memoryBytesPerSNode: elementwise!,
    copyBytesPerSNode: copy!,
  };
}

export interface GemmClassRates {
  /**
   * GFLOP/s per class (GEMM_CLASSES order, FLOPs per call in GEMM_CLASS_FLOP) of the whole node with one thread per
   * rank timed together, fresh outputs (node-rates.ts).
   */
  gflopsNode: number[];
  /** The node's attention rate (forward + backward at the rows' head shape, FLOP/s as the projection counts them). */
  attentionFlopsNode: number;
  /** The node's element-wise traffic (bytes read + written per second) at the rows' activation size. */
  memoryBytesPerSNode: number;
  /** Bytes the node's threads copy per second between cold buffers (the threads transport's collectives). */
  copyBytesPerSNode: number;
}

/**
 * The local system with the node's rates: matmuls, attention, element-wise kernels and the threads transport's copies
 * at the rates measured in the same run with one thread per rank running together (node-rates.ts; the attention
 * kernel's rate is its own: it ran at half the sgemm rate on an AVX-512 node and at 1/30 of it on an AVX2 node before
 * its SIMD was made native-width).
 * The projection shares them among the ranks (ranks_per_device = 0).
 */
export function localSystemWith(r: GemmClassRates): SystemSpec {
  const base = loadSystem('local');
  const node = r.gflopsNode.map((g) => g * 1e9);
  const large = node[node.length - 1]!;
  const small = node.slice(0, -1);
  const rate = { bfloat16: large, float32: large };
  return {
    ...base,
    device: {
      ...base.device,
      peakFlops: rate,
      matmulFlops: rate,
      matmulClasses: { flop: GEMM_CLASS_FLOP.slice(0, -1), flops: { float32: small, bfloat16: small } },
      attentionFlops: { bfloat16: r.attentionFlopsNode, float32: r.attentionFlopsNode },
      memoryBytesPerS: r.memoryBytesPerSNode,
    },
    // The threads transport copies each logical byte of a collective (its input and output) once, and the
    // projection charges half the logical bytes at β: β is half the node's copy rate. Measured cold, as a step's
    // collectives copy (local.toml's 16 GB/s came from bench:comm's hot 1–4 MiB buffers).
    links: { ...base.links, intra: { ...base.links.intra, bytesPerS: r.copyBytesPerSNode / 2 } },
  };
}

export interface LocalProjection {
  memory: number;
  bytes: number;
  tps: number;
  mfu: number;
  /** Eager ops per step and the step's seconds apart from their host cost. */
  ops: number;
  secondsWithoutOps: number;
}

/**
 * Shrinks a DSV3-small row to widths where its FLOPs and bytes are negligible, keeping every layer, expert, rank,
 * collective and kernel call: its step time is moe-actors' framework cost per step (actors, messages, N-API calls,
 * allocation, thread hand-offs) under the same load, which bench:seed turns into a cost per op for the row.
 */
export const OVERHEAD_TWIN = [
  '--model.args.dim',
  '16',
  '--model.args.n_heads',
  '2',
  '--model.args.moe_inter_dim',
  '8',
  '--model.args.qk_nope_head_dim',
  '4',
  '--model.args.qk_rope_head_dim',
  '4',
  '--model.args.v_head_dim',
  '4',
  '--model.args.kv_lora_rank',
  '8',
];

/** The host cost per op a twin run measured: its step time beyond its projected compute and comm, per op. */
export function opOverheadFromTwin(twinStepSeconds: number, twin: LocalProjection): number {
  return Math.max(0, twinStepSeconds - twin.secondsWithoutOps) / twin.ops;
}

export function projectLocal(
  config: string,
  overrides: string[],
  ranks: number,
  rates: GemmClassRates,
  opOverheadS = loadSystem('local').device.opOverheadS,
): LocalProjection {
  const base = localSystemWith(rates);
  const system = { ...base, device: { ...base.device, opOverheadS } };
  const p = project(planInputOf(loadJobConfig(config, overrides), ranks), { system });
  const sizes = p.plan.layout.sizes;
  const bytes =
    Object.entries(p.plan.bytesPerStep)
      .filter(([g]) => (sizes[g.replace(/_reduce$/, '') as MeshDim] ?? 1) > 1)
      .reduce((a, [, v]) => a + v, 0) + Object.values(p.scalarBytes).reduce((a, v) => a + v, 0);
  const s = p.time.seconds;
  return {
    memory: p.plan.memory.total,
    bytes,
    tps: p.tpsPerRank,
    mfu: p.mfu,
    ops: p.time.ops,
    secondsWithoutOps: s.total - s.opOverhead,
  };
}

export const PROJ_HEAD = [
  '| row | memory measured | memory projected | ratio | bytes/step measured | bytes/step projected | ratio | TPS measured | TPS projected | ratio | cores used | TPS measured, node alone | ratio |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
];

const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;

/** `cores` the run got over its steps and its TPS scaled to the node alone (cpu-share.ts). */
export function projRow(label: string, s: RunSummary, p: LocalProjection, cores: number, tpsAlone: number): string {
  return (
    `| ${label} | ${mib(s.memoryPerRankBytes)} | ${mib(p.memory)} | ${(p.memory / s.memoryPerRankBytes).toFixed(3)} | ` +
    `${mib(s.commBytesPerStep)} | ${mib(p.bytes)} | ${(p.bytes / s.commBytesPerStep).toFixed(4)} | ` +
    `${s.tps.toFixed(0)} | ${p.tps.toFixed(0)} | ${(p.tps / s.tps).toFixed(3)} | ` +
    `${cores.toFixed(2)} | ${tpsAlone.toFixed(0)} | ${(p.tps / tpsAlone).toFixed(3)} |`
  );
}
