// bench:seed's projection of a row with `--system local` (configs/systems/local.toml), the matmul, attention and
// element-wise rates replaced by the ones measured in the same run (node-rates.ts): memory per rank, logical bytes per step
// over the groups with more than one member (as bench:seed measures them: the byte model's plus the step's scalar
// collectives) and TPS per rank.
import { availableParallelism } from 'node:os';
import type { MeshDim } from '../../src/comm/mesh-layout.ts';
import { project } from '../../src/protocols/projection.ts';
import { loadJobConfig, modelConfigOf } from '../../src/train/job-config.ts';
import { buildModelSpec } from '../../src/models/spec.ts';
import { measureNodeRates, type RateClass } from './node-rates.ts';
import { loadSystem } from '../../src/train/system-file.ts';
import { planInputOf } from '../../src/train/plan-job.ts';
import type { RunSummary } from './seed-summary.ts';
import type { Kernels } from '../../src/tensor/kernels-api.ts';
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
  ];
}

/** The node's rates for a row's projection, timed with one thread per each of its `ranks` ranks (node-rates.ts). */
export async function measureRowRates(
  config: string,
  overrides: string[],
  ranks: number,
): Promise<Required<Pick<GemmClassRates, 'gflopsNode' | 'attentionFlopsNode' | 'memoryBytesPerSNode'>>> {
  const node = await measureNodeRates(rateClassesOf(config, overrides), ranks);
  const [attention, elementwise] = node.slice(GEMM_CLASSES.length);
  return {
    gflopsNode: node.slice(0, GEMM_CLASSES.length).map((r) => r / 1e9),
    attentionFlopsNode: attention!,
    memoryBytesPerSNode: elementwise!,
  };
}

export interface GemmClassRates {
  /** FLOPs per call and GFLOP/s of one BLAS thread, per class (GEMM_CLASSES order). */
  flop: number[];
  gflops1t: number[];
  /** GFLOP/s of the whole node with one thread per rank timed together, fresh outputs (node-rates.ts). */
  gflopsNode?: number[];
  /** The node's attention rate (forward + backward at the rows' head shape, FLOP/s as the projection counts them). */
  attentionFlopsNode?: number;
  /** The node's element-wise traffic (bytes read + written per second) at the rows' activation size. */
  memoryBytesPerSNode?: number;
}

/**
 * Sgemm rate per shape class on one BLAS thread (each rank of a bench:seed row runs one): for an M×K input and an
 * N×K weight, the three GEMMs a linear layer runs — forward y = x·Wᵀ (NT), input gradient dx = dy·W (NN), weight
 * gradient dW = dyᵀ·x (TN) — each best of its trials, the class rate = their FLOPs over their summed times (the
 * library may route the three layouts to different kernels).
 */
export function measureGemmClasses(k: Kernels, budgetMs = 150): GemmClassRates {
  const before = k.blasInfo().threads;
  k.setNumThreads(1);
  const fill = (n: number, p: number) => new Float32Array(n).map((_, i) => ((i * p) % 1000) / 1000 - 0.5);
  const best = (run: () => void, flop: number) => {
    run();
    let b = 0;
    const start = performance.now();
    for (let i = 0; i < 3 || performance.now() - start < budgetMs / 3; i++) {
      const t0 = performance.now();
      run();
      b = Math.max(b, flop / (Math.max(performance.now() - t0, 1e-6) * 1e6));
      if (i > 2000) break;
    }
    return b;
  };
  try {
    const flop: number[] = [];
    const gflops1t: number[] = [];
    for (const [m, kk, n] of GEMM_CLASSES) {
      const x = fill(m * kk, 7919);
      const w = fill(n * kk, 104729);
      const y = fill(m * n, 3571);
      const dx = new Float32Array(m * kk);
      const dw = new Float32Array(n * kk);
      const out = new Float32Array(m * n);
      const f = 2 * m * kk * n;
      const rates = [
        best(() => k.sgemm(false, true, m, n, kk, 1, x, kk, w, kk, 0, out, n), f),
        best(() => k.sgemm(false, false, m, kk, n, 1, y, n, w, kk, 0, dx, kk), f),
        best(() => k.sgemm(true, false, n, kk, m, 1, y, n, x, kk, 0, dw, kk), f),
      ];
      flop.push(f);
      gflops1t.push(3 / rates.reduce((a, r) => a + 1 / r, 0));
    }
    return { flop, gflops1t };
  } finally {
    k.setNumThreads(before);
  }
}

/**
 * The local system with the node's rates: matmuls measured with one thread per rank running together when `r` has
 * them (gflopsNode), else from one-thread class rates — `ranks` ranks each run one BLAS thread on the node's cores, so
 * the node delivers min(cores, ranks) one-thread rates. The projection shares them among the ranks
 * (ranks_per_device = 0). Attention and element-wise kernels take the rates measured the same way where `r` has them
 * (the attention kernel's rate is its own: it ran at half the sgemm rate on an AVX-512 node and at 1/30 of it on an
 * AVX2 node before its SIMD was made native-width), else local.toml's bench:kernels figures.
 */
export function localSystemWith(r: GemmClassRates, ranks: number, cores = availableParallelism()): SystemSpec {
  const base = loadSystem('local');
  const lanes = Math.min(cores, ranks);
  const node = r.gflopsNode ? r.gflopsNode.map((g) => g * 1e9) : r.gflops1t.map((g) => g * 1e9 * lanes);
  const large = node[node.length - 1]!;
  const small = node.slice(0, -1);
  const rate = { bfloat16: large, float32: large };
  return {
    ...base,
    device: {
      ...base.device,
      peakFlops: rate,
      matmulFlops: rate,
      matmulClasses: { flop: r.flop.slice(0, -1), flops: { float32: small, bfloat16: small } },
      ...(r.attentionFlopsNode
        ? { attentionFlops: { bfloat16: r.attentionFlopsNode, float32: r.attentionFlopsNode } }
        : {}),
      ...(r.memoryBytesPerSNode ? { memoryBytesPerS: r.memoryBytesPerSNode } : {}),
    },
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
  const base = localSystemWith(rates, ranks);
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
