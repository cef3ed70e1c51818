// One row of an Aurora-report-style table from a training run folder (outputs/<run>/: metrics.jsonl, job.json), and
// `npm run bench -- seed-summary [--peak-flops F] <run folder>...`, which prints the markdown table of several runs
// (e.g. the 12-rank runs of configs/ on Aurora, docs/benchmarks.md). Used by bench:seed for its rows.
//
//   TPS        torchtitan's throughput(tps): tokens per second per rank, mean over ranks, median over the steps after
//              the first (step 1 includes setup)
//   MFU        TPS · flops_per_token / peak per rank; the peak is `peakFlopsPerRank` when given (bench:seed passes
//              one peak for all rows), else the run's own (metrics.jsonl peak_flops: the trainer's sgemm peak measured
//              at start, shared by the ranks of a node, or [metrics] peak_flops)
//   memory     torchtitan's memory/max_active over the steps after the first, max over ranks
//   comm       logical bytes sent + received per rank per step over every group with more than one member (a size-1
//              group only copies locally), mean over ranks, median over the steps after the first
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { planMesh, type MeshDim, type ParallelDegrees } from '../../src/comm/mesh-layout.ts';
import { median } from './common.ts';

export interface RunSummary {
  dir: string;
  ranks: number;
  steps: number;
  tps: number;
  mfu: number;
  /** torchtitan's max_active of a rank's typical step (median over the steps after the first), the highest rank. */
  memoryPerRankBytes: number;
  /** The highest max_active of any rank and step: steps whose reductions waited on a descheduled peer hold more. */
  memoryPerRankMaxBytes: number;
  commBytesPerStep: number;
  flopsPerToken: number;
  peakFlopsPerRank: number;
  localBatch: number;
  seqLen: number;
  degrees: ParallelDegrees;
  dispatch: string;
}

type Rec = Record<string, number | string | null>;

/** Mesh group of a byte counter's group name (the reduction path's communicators carry a _reduce suffix). */
const baseDim = (g: string) => g.replace(/_reduce$/, '') as MeshDim;

export function summarizeRun(dir: string, opts: { peakFlopsPerRank?: number } = {}): RunSummary {
  const recs = readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Rec);
  const job = JSON.parse(readFileSync(join(dir, 'job.json'), 'utf8')) as {
    parallelism: Record<string, number | string>;
    training: { local_batch_size: number; seq_len: number };
    comm: { dispatch: string };
    model: { name: string };
  };
  const ranks = new Set(recs.map((r) => r.rank)).size;
  const p = job.parallelism;
  const degrees: ParallelDegrees = {
    dp_replicate: Number(p.data_parallel_replicate_degree),
    dp_shard: Number(p.data_parallel_shard_degree),
    tp: Number(p.tensor_parallel_degree),
    pp: Number(p.pipeline_parallel_degree),
    cp: Number(p.context_parallel_degree),
    ep: Number(p.expert_parallel_degree),
    etp: Number(p.expert_tensor_parallel_degree),
  };
  const layout = planMesh(degrees, ranks, { allowUnsupported: true });
  const steps = [...new Set(recs.map((r) => r.step as number))].filter((s) => s > 1).sort((a, b) => a - b);
  if (steps.length === 0)
    throw new Error(`${dir}: metrics.jsonl has no step after the first (run at least 2 steps with log_freq 1)`);
  const perStep = (f: (r: Rec) => number) =>
    steps.map((s) => {
      const rs = recs.filter((r) => r.step === s);
      return rs.reduce((acc, r) => acc + f(r), 0) / rs.length;
    });
  const tps = median(perStep((r) => Number(r['throughput(tps)'])));
  const flopsPerToken = Number(recs[0]!['flops_per_token']);
  const peakFlopsPerRank = opts.peakFlopsPerRank ?? Number(recs[0]!['peak_flops']);
  const commBytesPerStep = median(
    perStep((r) => {
      let b = 0;
      for (const [k, v] of Object.entries(r)) {
        const m = /^comm\/(.+)\(bytes\)$/.exec(k);
        if (m && (layout.sizes[baseDim(m[1]!)] ?? 1) > 1) b += Number(v);
      }
      return b;
    }),
  );
  const peaksOf = (rank: unknown) =>
    recs
      .filter((r) => r.rank === rank && (r.step as number) > 1)
      .map((r) => Number(r['memory/max_active(GiB)']) * 2 ** 30);
  const rankIds = [...new Set(recs.map((r) => r.rank))];
  const memoryPerRankBytes = Math.max(...rankIds.map((r) => median(peaksOf(r))));
  const memoryPerRankMaxBytes = Math.max(...rankIds.flatMap(peaksOf));
  return {
    dir,
    ranks,
    steps: steps.length + 1,
    tps,
    mfu: (tps * flopsPerToken) / peakFlopsPerRank,
    memoryPerRankBytes,
    memoryPerRankMaxBytes,
    commBytesPerStep,
    flopsPerToken,
    peakFlopsPerRank,
    localBatch: job.training.local_batch_size,
    seqLen: job.training.seq_len,
    degrees: layout.degrees,
    dispatch: layout.degrees.ep > 1 ? job.comm.dispatch : '—',
  };
}

export const TABLE_HEAD = [
  '| row | ranks | mesh | local batch | TPS/rank | MFU | memory/rank | comm bytes/step/rank | EP dispatch |',
  '|---|---:|---|---:|---:|---:|---:|---:|---|',
];

export function tableRow(label: string, s: RunSummary): string {
  const d = s.degrees;
  const mesh = `${d.dp_replicate > 1 ? `repl ${d.dp_replicate} × ` : ''}shard ${d.dp_shard}${d.ep > 1 ? `, EP ${d.ep}` : ''}`;
  const mib = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(0)} MiB`);
  return `| ${label} | ${s.ranks} | ${mesh} | ${s.localBatch} × ${s.seqLen} | ${s.tps.toFixed(0)} | ${(s.mfu * 100).toFixed(2)}% | ${mib(s.memoryPerRankBytes)} | ${mib(s.commBytesPerStep)} | ${s.dispatch} |`;
}

/** `npm run bench -- seed-summary [--peak-flops F] <run folder>...`: a markdown table of finished runs. */
export async function run(argv: string[]): Promise<void> {
  let peak: number | undefined;
  const dirs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--peak-flops') peak = Number(argv[++i]);
    else dirs.push(argv[i]!);
  }
  if (dirs.length === 0) {
    console.error('usage: npm run bench -- seed-summary [--peak-flops FLOPS_PER_RANK] <run folder>...');
    process.exitCode = 2;
    return;
  }
  console.log(TABLE_HEAD.join('\n'));
  for (const d of dirs)
    console.log(tableRow(d.replace(/\/$/, '').split('/').pop()!, summarizeRun(d, { peakFlopsPerRank: peak })));
}
