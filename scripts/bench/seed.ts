// `npm run bench:seed [-- --steps N --transport threads|inproc]`: the shape of the Aurora report's tables
// (shared/reference/seed-torchtitan-xpu.md) on this machine: 2 ranks instead of 12, the report's debug flavor
// (llama4 debugmodel_12_rank: dim 384, 6 layers, 12 experts) instead of the 1B/medium/large ones, through the real
// trainer (runTraining: config → plan → threads ranks → metrics.jsonl) with the translated configs and the
// report's backend limits (profile xccl-2025: padded all_gather EP, SUM + divide FSDP reductions).
//
// Rows (one result set each: <row>_tps, <row>_mfu, <row>_memory_per_rank_bytes, <row>_comm_bytes_per_step):
//   dense, moe_noep, moe_ep2, hsdp_r2   — Dense vs MoE (no EP) vs MoE + EP vs HSDP (replicate 2), 4 × 512 per rank
//   moe_noep_b<B>, moe_ep2_b<B>          — the batch-size sweep (local batch 2 and 8; 4 is the row above)
//   dsv3_noep, dsv3_ep4, dsv3_hsdp_ep2   — DeepSeek-V3 baseline_model_1b_12rank scaled down to run here (dim 256, 4
//                                          layers, 12 experts top-6, vocab 2048, 2 × 256 tokens per rank) on 4 ranks:
//                                          no EP (FSDP 4), EP 4 (FSDP 4), EP 2 + HSDP (replicate 2 × shard 2), the
//                                          report's padded all_gather, routing forced round-robin (Rmax = 1 exactly).
//                                          Each is projected with `--system local` (src/protocols/projection.ts) beside
//                                          the measurement: <row>_proj_{memory,bytes,tps}_ratio = projected / measured,
//                                          with the local system's matmul rates replaced by the GEMM shape-class rates
//                                          this run measured with one thread per rank running together on the cores
//                                          (node-rates.ts, per CPU-second the threads got; so are the attention and
//                                          element-wise rates, at the rows' shapes). Every row runs the configs' former op-SAC (SEED_AC). The projection
//                                          is for the node alone; <row>_cores_used (process CPU / wall over the steps,
//                                          cpu-share.ts) says how much of it the row got, <row>_proj_tps_ratio_alone
//                                          compares against the TPS scaled to the node alone (× lanes / cores used).
// TPS is torchtitan's (tokens per second per rank), median over the steps after the first (which includes setup).
// MFU = TPS · flops_per_token / (node sgemm peak / 2 ranks), with one peak for every row: measureSgemmPeak (N 1024, 2
// threads, the trainer's definition) sampled in this process before each row, median of the samples — so rows are
// comparable (the trainer's own MFU uses a peak measured once at its start, which moves with the machine's load).
// Memory per rank: torchtitan's max_active (the tracked allocator peak, reset after each log) of a rank's typical step
// (median over the steps after the first; step 1's peak includes building the full model before FSDP shards it), the
// highest rank. The median, not the max over steps: 4 ranks time-sharing 2 cores fall out of step, and a step whose
// gradient reductions wait on a descheduled peer holds a second unit's parameters and gradients (the highest step of
// any rank is printed beside it).
// Comm bytes per step: logical bytes sent + received per rank per step over every group with more than one
// member (size-1 groups only copy locally), mean over ranks, median over steps.
import { mkdirSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { runTraining } from '../../src/train/trainer.ts';
import { loadSystem } from '../../src/train/system-file.ts';
import { measureSgemmPeak } from '../../src/train/metrics/peak.ts';
import { getKernels } from '../../src/tensor/kernels.ts';
import type { MeshDim } from '../../src/comm/mesh-layout.ts';
import { ROOT, loadNote, machineInfo, median, writeReport, type BenchResult } from './common.ts';
import { coresDuringSteps, sampleCpu, type CoreShare } from './cpu-share.ts';
import { summarizeRun, tableRow, TABLE_HEAD, type RunSummary } from './seed-summary.ts';
import {
  opOverheadFromTwin,
  OVERHEAD_TWIN,
  projectLocal,
  projRow,
  PROJ_HEAD,
  measureRowRates,
  GEMM_CLASS_FLOP,
  type GemmClassRates,
} from './seed-projection.ts';

interface Row {
  name: string;
  label: string;
  config: string;
  overrides: string[];
  batch: number;
  ranks: number;
  /** Sequence length of the row (default: --seq). */
  seq?: number;
  /** Project the row with --system local beside the measurement. */
  project?: boolean;
}

interface Opts {
  steps: number;
  transport: string;
  seq: number;
  keep: boolean;
  /** Run only the rows whose name starts with this. */
  only: string;
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = { steps: 4, transport: 'threads', seq: 512, keep: false, only: '' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--steps') o.steps = Math.max(2, Number(argv[++i]));
    else if (a === '--seq') o.seq = Number(argv[++i]);
    else if (a === '--transport') o.transport = argv[++i]!;
    else if (a === '--keep') o.keep = true;
    else if (a === '--only') o.only = argv[++i] ?? '';
    else throw new Error(`bench:seed: unknown argument ${a}`);
  }
  return o;
}

const MOE = 'configs/llama4_ep12_fallback.toml';
const DSV3 = 'configs/deepseek_v3_1b_noep.toml';
/** The AC these rows were measured with (the configs' op-SAC before they took the report's AC off). */
const SEED_AC = ['--activation_checkpoint.mode', 'selective', '--activation_checkpoint.selective_ac_option', 'op'];
/** baseline_model_1b_12rank's family, sized for 2 cores: every other field as the flavor (MLA, 2 shared, softmax). */
export const DSV3_SMALL = [
  '--model.args.dim',
  '256',
  '--model.args.n_layers',
  '4',
  '--model.args.n_heads',
  '4',
  '--model.args.vocab_size',
  '2048',
  '--model.args.moe_inter_dim',
  '128',
  '--model.args.qk_nope_head_dim',
  '32',
  '--model.args.qk_rope_head_dim',
  '16',
  '--model.args.v_head_dim',
  '32',
  '--model.args.kv_lora_rank',
  '64',
  '--model.args.moe_args.num_experts',
  '12',
  '--debug.moe_force_load_balance',
  'true',
  '--comm.dispatch',
  'allgather-padded',
  // Pinned to what these rows measured and validated before the report configs took the report's own settings
  // (AC off, one dense first layer, sigmoid scores): the small rows keep op-SAC, every layer MoE, softmax scores.
  '--model.args.n_dense_layers',
  '0',
  '--model.args.moe_args.score_func',
  'softmax',
  ...SEED_AC,
];
const DENSE = 'configs/llama4_dense12.toml';
const par = (rep: number, shard: number, ep: number) => [
  '--parallelism.data_parallel_replicate_degree',
  String(rep),
  '--parallelism.data_parallel_shard_degree',
  String(shard),
  '--parallelism.expert_parallel_degree',
  String(ep),
];

function rows(): Row[] {
  const r: Row[] = [
    { name: 'dense', label: 'Dense (FSDP 2)', config: DENSE, overrides: par(1, 2, 1), batch: 4, ranks: 2 },
    { name: 'moe_noep', label: 'MoE (no EP, FSDP 2)', config: MOE, overrides: par(1, 2, 1), batch: 4, ranks: 2 },
    { name: 'moe_ep2', label: 'MoE + EP=2 (FSDP 2)', config: MOE, overrides: par(1, 2, 2), batch: 4, ranks: 2 },
    { name: 'hsdp_r2', label: 'MoE, HSDP (Repl=2, no EP)', config: MOE, overrides: par(2, 1, 1), batch: 4, ranks: 2 },
  ];
  for (const b of [2, 8]) {
    r.push({
      name: `moe_noep_b${b}`,
      label: `MoE (no EP), batch ${b}`,
      config: MOE,
      overrides: par(1, 2, 1),
      batch: b,
      ranks: 2,
    });
    r.push({
      name: `moe_ep2_b${b}`,
      label: `MoE + EP=2, batch ${b}`,
      config: MOE,
      overrides: par(1, 2, 2),
      batch: b,
      ranks: 2,
    });
  }
  const dsv3 = (name: string, label: string, rep: number, shard: number, ep: number): Row => ({
    name,
    label,
    config: DSV3,
    overrides: [...DSV3_SMALL, ...par(rep, shard, ep)],
    batch: 2,
    seq: 256,
    ranks: 4,
    project: true,
  });
  r.push(dsv3('dsv3_noep', 'DSV3 small, no EP (FSDP 4)', 1, 4, 1));
  r.push(dsv3('dsv3_ep4', 'DSV3 small, EP=4 (FSDP 4)', 1, 4, 4));
  r.push(dsv3('dsv3_hsdp_ep2', 'DSV3 small, EP=2 + HSDP (Repl=2 × shard 2)', 2, 2, 2));
  return r;
}

/** mesh group of a byte counter's group name (reduction-path communicators carry a _reduce suffix). */
const baseDim = (g: string) => g.replace(/_reduce$/, '') as MeshDim;

export async function run(argv: string[]): Promise<void> {
  const o = parseArgs(argv);
  const notes: string[] = [loadNote('at start')];
  const dump = join(ROOT, 'outputs', 'bench', 'seed-runs');
  mkdirSync(dump, { recursive: true });
  const results: BenchResult[] = [];
  const table: string[] = [...TABLE_HEAD];
  const t0 = performance.now();
  const k = getKernels();
  const peaks: number[] = [];
  const classRates: GemmClassRates[] = [];
  const measured: {
    row: Row;
    sum: RunSummary;
    overrides: string[];
    twin?: RunSummary;
    share: CoreShare;
    twinShare?: CoreShare;
  }[] = [];
  for (const row of rows().filter((r) => r.name.startsWith(o.only))) {
    peaks.push(measureSgemmPeak(k, { n: 1024, threads: 2, budgetMs: 300 }).gflops);
    const overrides = [
      ...SEED_AC,
      ...row.overrides,
      '--comm.transport',
      o.transport,
      '--comm.ranks',
      String(row.ranks),
      '--comm.ranks_per_node',
      '0',
      '--training.local_batch_size',
      String(row.batch),
      '--training.seq_len',
      String(row.seq ?? o.seq),
      '--training.steps',
      String(o.steps),
      '--metrics.log_freq',
      '1',
      '--job.dump_folder',
      dump,
      '--job.run_name',
      `seed-${row.name}`,
    ];
    if (row.project) classRates.push(await measureRowRates(join(ROOT, row.config), overrides, row.ranks));
    // The framework-cost twin runs right before its row, under the same load (OVERHEAD_TWIN).
    let twin: RunSummary | undefined;
    let twinShare: CoreShare | undefined;
    if (row.project) {
      const name = `seed-${row.name}-twin`;
      rmSync(join(dump, name), { recursive: true, force: true });
      const twCpu = sampleCpu();
      const tw = await runTraining({ config: join(ROOT, row.config), quiet: true }, [
        ...overrides,
        ...OVERHEAD_TWIN,
        '--job.run_name',
        name,
      ]);
      const twSamples = twCpu.stop();
      if (!tw) throw new Error(`bench:seed: ${row.name}'s overhead twin did not run`);
      twin = summarizeRun(tw.runDir, { peakFlopsPerRank: 1 });
      twinShare = coresDuringSteps(tw.runDir, twSamples, row.ranks);
    }
    rmSync(join(dump, `seed-${row.name}`), { recursive: true, force: true });
    const cpu = sampleCpu();
    const out = await runTraining({ config: join(ROOT, row.config), quiet: true }, overrides);
    const samples = cpu.stop();
    if (!out) throw new Error(`bench:seed: ${row.name} did not run`);
    const sum = summarizeRun(out.runDir, { peakFlopsPerRank: 1 });
    const share = coresDuringSteps(out.runDir, samples, row.ranks);
    const sizes = out.plan.layout.sizes;
    const predicted = Object.entries(out.plan.bytesPerStep)
      .filter(([g]) => (sizes[baseDim(g)] ?? 1) > 1)
      .reduce((a, [, v]) => a + v, 0);
    notes.push(
      `${row.name}: ${loadNote('after the row')}; plan predicted comm ${(predicted / 2 ** 20).toFixed(1)} MiB/step; ` +
        `steps after the first: process CPU ${share.cpuSeconds.toFixed(1)} s over ${share.wallSeconds.toFixed(1)} s wall = ${share.cores.toFixed(2)} of ${availableParallelism()} cores` +
        `; rank threads ${share.rankCpuSeconds.toFixed(1)} s, other threads ${share.otherCpuSeconds.toFixed(1)} s` +
        (twinShare
          ? ` (its twin: ${twinShare.cores.toFixed(2)} cores; rank threads ${twinShare.rankCpuSeconds.toFixed(1)} s, other ${twinShare.otherCpuSeconds.toFixed(1)} s over ${twinShare.wallSeconds.toFixed(1)} s)`
          : ''),
    );
    results.push({
      name: `${row.name}_cores_used`,
      value: share.cores,
      unit: 'cores',
      note: `process CPU seconds / wall seconds over the steps after the first, of ${availableParallelism()} cores`,
    });
    measured.push({ row, sum, overrides, twin, share, twinShare });
  }
  const peak = median(peaks);
  notes.push(
    `sgemm peak ${peak.toFixed(1)} GFLOP/s (node, N=1024, 2 threads; median of ${peaks.length} samples, range ${Math.min(...peaks).toFixed(0)}–${Math.max(...peaks).toFixed(0)}), shared by the ranks of each row`,
  );
  // One rate per class for every projected row: the median over the samples taken before each row.
  const rates: GemmClassRates | null = classRates.length
    ? {
        gflopsNode: classRates[0]!.gflopsNode.map((_, i) => median(classRates.map((c) => c.gflopsNode[i]!))),
        attentionFlopsNode: median(classRates.map((c) => c.attentionFlopsNode)),
        memoryBytesPerSNode: median(classRates.map((c) => c.memoryBytesPerSNode)),
        copyBytesPerSNode: median(classRates.map((c) => c.copyBytesPerSNode)),
      }
    : null;
  if (rates)
    notes.push(
      `GEMM classes, node (one thread per rank of the DSV3 rows timed together, fresh outputs; median of ${classRates.length}; the projection's matmul rates): ${GEMM_CLASS_FLOP.map((f, i) => `${(f / 1e6).toFixed(1)} MFLOP ${rates.gflopsNode[i]!.toFixed(1)} GFLOP/s`).join(', ')}`,
      `attention (the rows' head shape, forward + backward, timed the same way; the projection's attention rate): ${(rates.attentionFlopsNode / 1e9).toFixed(1)} GFLOP/s; element-wise (add over one rank's activations): ${(rates.memoryBytesPerSNode / 1e9).toFixed(1)} GB/s read + written (the projection's memory rate; local.toml has ${(loadSystem('local').device.memoryBytesPerS / 1e9).toFixed(1)}); copies between cold buffers: ${(rates.copyBytesPerSNode / 1e9).toFixed(1)} GB/s copied (the threads transport's β, half of it: ${(rates.copyBytesPerSNode / 2e9).toFixed(1)} GB/s; local.toml has ${(loadSystem('local').links.intra.bytesPerS / 1e9).toFixed(1)})`,
    );
  const projTable: string[] = [...PROJ_HEAD];
  for (const { row, sum, overrides, twin, share, twinShare } of measured) {
    const perRankPeak = (peak * 1e9) / row.ranks;
    const mfu = (sum.tps * sum.flopsPerToken) / perRankPeak;
    if (row.project && rates && twin && twinShare) {
      const cfgPath = join(ROOT, row.config);
      // The projection is for the node alone: the ranks' threads on min(cores, ranks) cores. A run that got fewer
      // cores (other processes) would have taken wall × cores_used / lanes there (cpu-share.ts).
      const lanes = Math.min(availableParallelism(), row.ranks);
      const alone = (c: CoreShare) => Math.min(1, c.cores / lanes);
      const twinProj = projectLocal(cfgPath, [...overrides, ...OVERHEAD_TWIN], row.ranks, rates, 0);
      const twinStepS = (twin.localBatch * twin.seqLen) / twin.tps;
      const opS = opOverheadFromTwin(twinStepS * alone(twinShare), twinProj);
      notes.push(
        `${row.name}: overhead twin ${twin.tps.toFixed(0)} tokens/s/rank on ${twinShare.cores.toFixed(2)} cores → ${(opS * 1e6).toFixed(1)} µs per op on the node alone (${twinProj.ops.toFixed(0)} ops per step)`,
      );
      results.push({
        name: `${row.name}_op_overhead_us`,
        value: opS * 1e6,
        unit: 'µs',
        note: 'framework cost per op, measured on the width-16 twin, scaled to the node alone',
      });
      const pr = projectLocal(cfgPath, overrides, row.ranks, rates, opS);
      const tpsAlone = sum.tps / alone(share);
      const r = {
        memory: pr.memory / sum.memoryPerRankBytes,
        bytes: pr.bytes / sum.commBytesPerStep,
        tps: pr.tps / sum.tps,
        tpsAlone: pr.tps / tpsAlone,
      };
      results.push(
        {
          name: `${row.name}_proj_memory_ratio`,
          value: r.memory,
          unit: 'fraction',
          note: `projected ${(pr.memory / 2 ** 20).toFixed(1)} MiB / measured ${(sum.memoryPerRankBytes / 2 ** 20).toFixed(1)} MiB, a rank's typical step (target within 10 %; the highest step of any rank ${(sum.memoryPerRankMaxBytes / 2 ** 20).toFixed(1)} MiB)`,
        },
        {
          name: `${row.name}_proj_bytes_ratio`,
          value: r.bytes,
          unit: 'fraction',
          note: `projected ${pr.bytes} B / measured ${sum.commBytesPerStep} B per step (target exact)`,
        },
        {
          name: `${row.name}_proj_tps_ratio`,
          value: r.tps,
          unit: 'fraction',
          note: `projected ${pr.tps.toFixed(0)} / measured ${sum.tps.toFixed(0)} tokens/s/rank (target within 25 %; the run got ${share.cores.toFixed(2)} of ${lanes} cores)`,
        },
        {
          name: `${row.name}_proj_tps_ratio_alone`,
          value: r.tpsAlone,
          unit: 'fraction',
          note: `projected ${pr.tps.toFixed(0)} / measured scaled to the node alone ${tpsAlone.toFixed(0)} tokens/s/rank (measured × ${lanes} / ${share.cores.toFixed(2)} cores used)`,
        },
      );
      projTable.push(projRow(row.label, sum, pr, share.cores, tpsAlone));
    }
    results.push(
      { name: `${row.name}_tps`, value: sum.tps, unit: 'tokens/s/rank', note: row.label },
      { name: `${row.name}_mfu`, value: mfu, unit: 'fraction' },
      { name: `${row.name}_memory_per_rank_bytes`, value: sum.memoryPerRankBytes, unit: 'B' },
      { name: `${row.name}_comm_bytes_per_step`, value: sum.commBytesPerStep, unit: 'B' },
    );
    table.push(tableRow(`${row.label} (${row.config.replace('configs/', '')})`, { ...sum, mfu }));
  }
  notes.push(`bench time ${((performance.now() - t0) / 1000).toFixed(0)} s; run folders in ${dump}`);
  console.log(
    `\nAurora report tables, shape on this machine (2 ranks, ${o.transport}, llama4 debugmodel_12_rank, profile xccl-2025):\n`,
  );
  console.log(table.join('\n'));
  if (projTable.length > PROJ_HEAD.length)
    console.log(
      `\nProjected with --system local (matmul rates: this run's GEMM shape classes, one thread per rank together on ${availableParallelism()} cores; ratio = projected / measured):\n\n${projTable.join('\n')}`,
    );
  writeReport({
    bench: 'seed',
    when: new Date().toISOString(),
    machine: machineInfo(process.env.OPENBLAS_CORETYPE ? `openblas ${process.env.OPENBLAS_CORETYPE}` : 'openblas'),
    config: {
      ranks: '2 (llama4 rows), 4 (dsv3 rows)',
      transport: o.transport,
      flavor: 'debugmodel_12_rank; DSV3 small',
      seq_len: o.seq,
      steps: o.steps,
      configs: [MOE, DENSE, DSV3],
      table: table.join('\n'),
      projection: projTable.join('\n'),
    },
    results,
    notes,
  });
}
