// `npm run bench:ep [-- --reps N --rounds N --steps N --no-mpi]`: expert parallelism on this machine.
//
// Part 1, one MoE layer (the Llama4 debugmodel's: D 256, 8 experts top-1, hidden 512, 1 shared expert) on EP = 2
// ranks, every dispatch strategy, on the threads transport and under `mpiexec.mpich -n 2` (UCX_MEM_EVENTS=no):
//   <strategy>_bytes_per_layer      bytes (sent + received) of one rank's EP communicator for one layer forward +
//                                   backward, from the communicator's byte counters (threads run), mean over ranks
//   <strategy>_bytes_model_ratio    measured / moeBytes(strategy, shape) with the shape of the same call (tokens,
//                                   rows each rank's experts received, the largest such count); target within 5 %
//   <strategy>_layer_ms             forward + backward wall time of the layer (threads; median over reps × rounds,
//                                   max over the two ranks of each rep); <strategy>_mpi_layer_ms likewise under mpi
//   T = 1024 tokens per rank (the train step's: global batch 4 × 512 over 2 ranks), 1 BLAS thread per rank.
// Part 2, EP = 4 on 4 inproc ranks, top-k 1: measured bytes per layer of each strategy must order
//   a2a < allgather-rs < allgather-padded (ep4_bytes_order_ok = 1).
// Part 3, the train step (RankHost: forward, backward, FSDP reductions, clip, expert-bias update, AdamW) on the
// debugmodel, global batch 4 × 512, AC none:
//   ep2_train_tps          EP 2 + FSDP 2 on 2 ranks of the threads transport, 1 BLAS thread per rank (global tokens/s)
//   single_rank_train_tps  1 rank (threads transport, the same runtime), 2 BLAS threads, the same global batch
//   ep2_vs_single_rank     their ratio; target ≥ 0.85. The two alternate (--rounds), so both see the same load.
//   Where the EP 2 step's time goes: the PhaseTimes split (forward/backward/reduce/optimizer states, time with a
//   collective in flight) and bytes per group per step are in the notes.
// Environment: the kernels are loaded in this (main) thread before any worker starts, as the trainer does, so
// OPENBLAS_CORETYPE and OMP_WAIT_POLICY=passive are decided once for the process; MPI ranks get UCX_MEM_EVENTS=no.
import { fileURLToPath } from 'node:url';
import { launch, type RankOutcome } from '../../src/comm/launch.ts';
import { spawnMpi } from '../../src/comm/mpi/spawn.ts';
import type { RankJob } from '../../src/actors/rank-host.ts';
import { resolveModelConfig, type ResolvedModelConfig } from '../../src/models/config.ts';
import { DISPATCH_STRATEGIES, moeBytes, MOE_PHASES, type DispatchStrategy } from '../../src/protocols/strategies.ts';
import { BENCH_OPTIMIZER, loadNote, machineInfo, median, range, writeReport, type BenchResult } from './common.ts';
import type { EpRankArgs, LayerArgs, LayerResult, TrainArgs, TrainResult } from './ep-rank.ts';

const PROGRAM = fileURLToPath(new URL('./ep-rank.ts', import.meta.url));

interface Opts {
  reps: number;
  rounds: number;
  steps: number;
  mpi: boolean;
  seq: number;
  batch: number;
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = { reps: 8, rounds: 2, steps: 6, mpi: true, seq: 512, batch: 4 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) throw new Error(`bench:ep: ${a} needs a positive integer`);
      return v;
    };
    if (a === '--reps') o.reps = num();
    else if (a === '--rounds') o.rounds = num();
    else if (a === '--steps') o.steps = num();
    else if (a === '--seq') o.seq = num();
    else if (a === '--batch') o.batch = num();
    else if (a === '--no-mpi') o.mpi = false;
    else throw new Error(`bench:ep: unknown argument ${a}`);
  }
  return o;
}

function values<R>(outcomes: RankOutcome<R>[], what: string): R[] {
  const bad = outcomes.filter((x) => !x.ok);
  if (bad.length)
    throw new Error(
      `${what} failed: ${bad.map((b) => `rank ${b.rank}: ${(b as { error: string }).error.split('\n')[0]}`).join('; ')}`,
    );
  return outcomes
    .map((x) => (x as { value: R }).value)
    .sort((a, b) => (a as { rank: number }).rank - (b as { rank: number }).rank);
}

async function runWorld<R>(
  transport: 'inproc' | 'threads' | 'mpi',
  size: number,
  args: EpRankArgs,
  what: string,
): Promise<R[]> {
  if (transport === 'mpi') {
    const r = await spawnMpi<R>({
      n: size,
      entry: { module: PROGRAM },
      args,
      world: { timeoutMs: 120_000 },
      jobTimeoutMs: 170_000,
    });
    if (r.diagnosis) throw new Error(`${what} under mpi failed: ${r.diagnosis}\n${r.stderr.slice(-2000)}`);
    return values(r.outcomes, what);
  }
  const r = await launch<EpRankArgs, R>({ transport, size, timeoutMs: 120_000, seed: 1 }, { module: PROGRAM }, args);
  return values(r.outcomes, what);
}

/** Predicted bytes (sent + received, every phase) of each rank for one rep of the layer. */
function modelBytes(
  strategy: DispatchStrategy,
  r0: LayerResult,
  rep: number,
  P: number,
  N: number,
  D: number,
  K: number,
  E: number,
  rowBytes: 2 | 4 = 4,
): number[] {
  const counts = r0.counts[rep]!; // [src·E + e], the same on every rank (all_gathered)
  const L = E / P;
  const rowsIn = Array.from({ length: P }, (_, r) => {
    let s = 0;
    for (let src = 0; src < P; src++) for (let e = r * L; e < (r + 1) * L; e++) s += counts[src * E + e]!;
    return s;
  });
  const rowsInMax = Math.max(...rowsIn);
  return rowsIn.map((ri) => {
    const b = moeBytes(strategy, { P, T: N, Tmax: N, D, K, E, rowsIn: ri, rowsInMax, rowBytes });
    return MOE_PHASES.reduce((acc, ph) => acc + b[ph].sent + b[ph].received, 0);
  });
}

interface LayerStats {
  ms: number[];
  fwdMs: number[];
  bwdMs: number[];
  measured: number[];
  predicted: number[];
}

function layerStats(
  rs: LayerResult[],
  strategy: DispatchStrategy,
  N: number,
  model: ResolvedModelConfig,
  rowBytes: 2 | 4 = 4,
): LayerStats {
  const P = rs.length;
  const a = model.args as { dim: number; moe_args: { top_k: number; num_experts: number } };
  const s: LayerStats = { ms: [], fwdMs: [], bwdMs: [], measured: [], predicted: [] };
  const reps = rs[0]!.ms.length;
  for (let i = 0; i < reps; i++) {
    s.ms.push(Math.max(...rs.map((r) => r.ms[i]!)));
    s.fwdMs.push(Math.max(...rs.map((r) => r.fwdMs[i]!)));
    s.bwdMs.push(Math.max(...rs.map((r) => r.bwdMs[i]!)));
    const pred = modelBytes(strategy, rs[0]!, i, P, N, a.dim, a.moe_args.top_k, a.moe_args.num_experts, rowBytes);
    for (let r = 0; r < P; r++) {
      s.measured.push(rs[r]!.sent[i]! + rs[r]!.received[i]!);
      s.predicted.push(pred[r]!);
    }
  }
  return s;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function trainJob(
  model: ResolvedModelConfig,
  degrees: RankJob['degrees'],
  dispatch: RankJob['dispatch'],
  threads: number,
  paramDtype: 'float32' | 'bfloat16' = 'float32',
): RankJob {
  return {
    paramDtype,
    model,
    degrees,
    dispatch,
    gradReduce: 'sum',
    divideFactor: 1,
    reshard: 'default',
    ac: { mode: 'none' },
    ...BENCH_OPTIMIZER,
    seed: 0,
    threads,
  };
}

export async function run(argv: string[]): Promise<void> {
  const o = parseArgs(argv);
  const notes: string[] = [loadNote('at start')];
  const userEnv = { ...process.env };
  const { getKernels } = await import('../../src/tensor/kernels.ts');
  const info = getKernels().blasInfo(); // in the main thread first: OPENBLAS_CORETYPE, OMP_WAIT_POLICY for every worker
  for (const key of ['OPENBLAS_CORETYPE', 'OPENBLAS_THREAD_TIMEOUT', 'OMP_WAIT_POLICY'] as const) {
    if (userEnv[key] !== process.env[key])
      notes.push(
        `environment: the kernels loader set ${key}=${process.env[key]} for this process and its workers (was ${userEnv[key] ?? 'unset'})`,
      );
  }
  const model = resolveModelConfig({ name: 'llama4', flavor: 'debugmodel' }, o.seq);
  const results: BenchResult[] = [];
  const t0 = performance.now();

  // ---- part 1: one MoE layer, EP 2, threads (and mpi) ----
  const N2 = (o.batch / 2) * o.seq;
  const layerArgs = (strategy: DispatchStrategy, N: number, reps: number, warmup: number): LayerArgs => ({
    mode: 'layer',
    model,
    strategy,
    N,
    reps,
    warmup,
    threads: 1,
  });
  const byStrategy = new Map<DispatchStrategy, LayerStats>();
  for (let round = 0; round < o.rounds; round++) {
    for (const s of DISPATCH_STRATEGIES) {
      const rs = await runWorld<LayerResult>('threads', 2, layerArgs(s, N2, o.reps, 2), `layer ${s} (threads)`);
      const st = layerStats(rs, s, N2, model);
      const acc = byStrategy.get(s);
      if (!acc) byStrategy.set(s, st);
      else for (const k of Object.keys(st) as (keyof LayerStats)[]) acc[k].push(...st[k]);
    }
  }
  for (const s of DISPATCH_STRATEGIES) {
    const st = byStrategy.get(s)!;
    const measured = mean(st.measured);
    const ratio = mean(st.measured.map((m, i) => m / st.predicted[i]!));
    results.push(
      {
        name: `${s}_bytes_per_layer`,
        value: measured,
        unit: 'B',
        note: `per rank, fwd + bwd, T=${N2} tokens/rank, EP 2 (threads byte counters); model ${mean(st.predicted).toFixed(0)} B`,
      },
      {
        name: `${s}_bytes_model_ratio`,
        value: ratio,
        unit: 'ratio',
        target: 1,
        note: `range ${range(
          st.measured.map((m, i) => m / st.predicted[i]!),
          4,
        )}; within 5 %: ${Math.abs(ratio - 1) <= 0.05 ? 'yes' : 'NO'}`,
      },
      {
        name: `${s}_layer_ms`,
        value: median(st.ms),
        unit: 'ms',
        note: `threads, fwd ${median(st.fwdMs).toFixed(1)} + bwd ${median(st.bwdMs).toFixed(1)}; range ${range(st.ms)}`,
      },
    );
  }
  if (o.mpi) {
    try {
      for (const s of DISPATCH_STRATEGIES) {
        const rs = await runWorld<LayerResult>('mpi', 2, layerArgs(s, N2, o.reps, 2), `layer ${s}`);
        const st = layerStats(rs, s, N2, model);
        const ratio = mean(st.measured.map((m, i) => m / st.predicted[i]!));
        results.push(
          {
            name: `${s}_mpi_layer_ms`,
            value: median(st.ms),
            unit: 'ms',
            note: `mpiexec.mpich -n 2, fwd ${median(st.fwdMs).toFixed(1)} + bwd ${median(st.bwdMs).toFixed(1)}; range ${range(st.ms)}`,
          },
          { name: `${s}_mpi_bytes_model_ratio`, value: ratio, unit: 'ratio', target: 1 },
        );
      }
    } catch (e) {
      notes.push(`mpi part skipped: ${(e as Error).message.split('\n')[0]}`);
    }
  } else notes.push('mpi part skipped (--no-mpi)');

  // ---- part 1b: the same layer under bf16 mixed precision: rows on the wire halve (reduce_scatters stay f32) ----
  for (const s of DISPATCH_STRATEGIES) {
    const rs = await runWorld<LayerResult>(
      'threads',
      2,
      { ...layerArgs(s, N2, o.reps, 1), paramDtype: 'bfloat16' },
      `layer ${s} bf16 (threads)`,
    );
    const st = layerStats(rs, s, N2, model, 2);
    const fp32 = mean(byStrategy.get(s)!.measured);
    results.push(
      {
        name: `${s}_bf16_bytes_per_layer`,
        value: mean(st.measured),
        unit: 'B',
        note: `mixed_precision_param = bfloat16; ${(mean(st.measured) / fp32).toFixed(3)} of fp32's (all_gather/all_to_all rows halve, reduce_scatters and counts do not)`,
      },
      {
        name: `${s}_bf16_bytes_model_ratio`,
        value: mean(st.measured.map((m, i) => m / st.predicted[i]!)),
        unit: 'ratio',
        target: 1,
        note: 'measured / moeBytes with rowBytes 2',
      },
    );
  }

  // ---- part 2: EP 4, top-k 1, bytes order (inproc) ----
  {
    const N4 = (o.batch / 4) * o.seq;
    const m4 = {
      ...model,
      args: { ...model.args, moe_args: { ...(model.args as { moe_args: object }).moe_args, top_k: 1 } },
    } as ResolvedModelConfig;
    const bytes: Record<string, number> = {};
    for (const s of DISPATCH_STRATEGIES) {
      const rs = await runWorld<LayerResult>(
        'inproc',
        4,
        { ...layerArgs(s, N4, 2, 1), model: m4 },
        `layer ${s} (inproc, EP 4)`,
      );
      const st = layerStats(rs, s, N4, m4);
      bytes[s] = mean(st.measured);
      results.push({
        name: `ep4_${s}_bytes_per_layer`,
        value: bytes[s]!,
        unit: 'B',
        note: `EP 4 inproc, top-k 1, T=${N4}; model ratio ${mean(st.measured.map((m, i) => m / st.predicted[i]!)).toFixed(4)}`,
      });
    }
    const ok = bytes['a2a']! < bytes['allgather-rs']! && bytes['allgather-rs']! < bytes['allgather-padded']!;
    results.push({
      name: 'ep4_bytes_order_ok',
      value: ok ? 1 : 0,
      unit: 'bool',
      target: 1,
      note: 'a2a < allgather-rs < allgather-padded',
    });
  }

  // ---- part 3: train step, EP 2 (threads, 1 thread/rank) vs one rank (2 threads) ----
  const trainArgs = (degrees: RankJob['degrees'], dispatch: RankJob['dispatch'], threads: number): TrainArgs => ({
    mode: 'train',
    job: trainJob(model, degrees, dispatch, threads),
    B: o.batch,
    S: o.seq,
    steps: o.steps,
    warmup: 2,
  });
  const ep2Ms: number[] = [];
  const singleMs: number[] = [];
  let ep2Last: TrainResult[] = [];
  for (let round = 0; round < o.rounds; round++) {
    const ep2 = await runWorld<TrainResult>('threads', 2, trainArgs({ dp_shard: 2, ep: 2 }, 'a2a', 1), 'EP 2 train');
    for (let i = 0; i < ep2[0]!.stepMs.length; i++) ep2Ms.push(Math.max(...ep2.map((r) => r.stepMs[i]!)));
    ep2Last = ep2;
    const one = await runWorld<TrainResult>(
      'threads',
      1,
      trainArgs({ dp_shard: 1, ep: 1 }, 'local', 2),
      'single-rank train',
    );
    singleMs.push(...one[0]!.stepMs);
  }
  const tokens = o.batch * o.seq;
  const ep2Tps = tokens / (median(ep2Ms) / 1000);
  const oneTps = tokens / (median(singleMs) / 1000);
  results.push(
    {
      name: 'ep2_train_tps',
      value: ep2Tps,
      unit: 'tokens/s',
      note: `global; EP 2 + FSDP 2, a2a, threads, 1 BLAS thread/rank; step ${range(ep2Ms, 0)} ms`,
    },
    {
      name: 'single_rank_train_tps',
      value: oneTps,
      unit: 'tokens/s',
      note: `1 rank (threads), 2 BLAS threads; step ${range(singleMs, 0)} ms`,
    },
    {
      name: 'ep2_vs_single_rank',
      value: ep2Tps / oneTps,
      unit: 'ratio',
      target: 0.85,
      note: `${o.rounds} alternating rounds × ${o.steps} steps`,
    },
    { name: 'ep2_peak_memory_per_rank_bytes', value: Math.max(...ep2Last.map((r) => r.peakBytes)), unit: 'B' },
  );
  // FSDP all-gather bytes under bf16: one EP 2 + FSDP 2 run, the fsdp/efsdp groups' bytes against the fp32 run's.
  {
    const bf = await runWorld<TrainResult>(
      'threads',
      2,
      {
        ...trainArgs({ dp_shard: 2, ep: 2 }, 'a2a', 1),
        job: trainJob(model, { dp_shard: 2, ep: 2 }, 'a2a', 1, 'bfloat16'),
      },
      'EP 2 train bf16',
    );
    for (const g of ['fsdp', 'efsdp']) {
      const f = ep2Last[0]!.bytesByGroup[g] ?? 0;
      const b = bf[0]!.bytesByGroup[g] ?? 0;
      if (f > 0)
        results.push({
          name: `${g}_allgather_bytes_bf16_vs_fp32`,
          value: b / f,
          unit: 'ratio',
          target: 0.5,
          note: `parameter all_gathers per step, rank 0: ${(b / o.steps / 2 ** 20).toFixed(2)} vs ${(f / o.steps / 2 ** 20).toFixed(2)} MiB`,
        });
    }
  }
  const r0 = ep2Last[0]!;
  const per = (v: number) => (v / o.steps).toFixed(1);
  notes.push(
    `EP 2 step, rank 0, ms per step by phase (states overlap; communication = time with a collective in flight): ${Object.entries(
      r0.phasesMs,
    )
      .map(([k, v]) => `${k} ${per(v)}`)
      .join(', ')}`,
  );
  notes.push(
    `EP 2 step, rank 0, bytes per step by group: ${Object.entries(r0.bytesByGroup)
      .filter(([, v]) => v > 0)
      .map(([k, v]) => `${k} ${(v / o.steps / 2 ** 20).toFixed(2)} MiB`)
      .join(', ')}`,
  );
  notes.push(loadNote('at end'));
  notes.push(`bench time ${((performance.now() - t0) / 1000).toFixed(0)} s`);

  writeReport({
    bench: 'ep',
    when: new Date().toISOString(),
    machine: machineInfo(`${info.name} ${info.corename ?? ''}`.trim()),
    config: {
      flavor: 'debugmodel',
      batch: o.batch,
      seq_len: o.seq,
      tokens_per_rank_ep2: N2,
      reps: o.reps,
      rounds: o.rounds,
      steps: o.steps,
      strategies: DISPATCH_STRATEGIES,
    },
    results,
    notes,
  });
}
