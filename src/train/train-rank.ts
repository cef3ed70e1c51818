// The training rank program (src/comm/launch.ts runs it on every rank of inproc, threads or mpi): job config →
// RankHost (mesh, model part, actors) → data loader of this rank's batch shard → steps with metrics, trace events
// and checkpoints → a summary for the launcher. The launcher made the plan (strategies) and measured the peak.

import { existsSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { RankContext } from '../comm/launch.ts';
import { RankHost, type RankJob } from '../actors/rank-host.ts';
import type { ParamDtype } from '../tensor/precision.ts';
import type { Microbatch } from '../models/model/model.ts';
import { buildModelSpec } from '../models/spec.ts';
import { flopsPerToken } from '../models/counts.ts';
import type { EventSink, TraceEvent } from '../protocols/events.ts';
import type { GradReduce } from '../protocols/fsdp-unit.machine.ts';
import type { MoeStrategy } from '../protocols/strategies.ts';
import { TraceRecorder, runPaths, teeSink } from '../trace/index.ts';
import { alignRecorderClock } from '../trace/clock.ts';
import { BroadcastChannel } from 'node:worker_threads';
import {
  CheckpointError,
  commitManifest,
  stepDir,
  configHash,
  latestComplete,
  listCheckpoints,
  readCheckpoint,
  verifyCheckpoint,
  pruneCheckpoints,
  type CompleteCheckpoint,
  type PartialCheckpoint,
} from './checkpoint/index.ts';
import { CheckpointSaver } from './checkpoint-saver.ts';
import { connectSidePool, processPool, type SidePool } from './pool/pool.ts';
import { DataStateError, openDataLoader } from './data/index.ts';
import { acModeOf, degreesOf, loadJobConfig, modelConfigOf, type JobConfig } from './job-config.ts';
import { createMetricsLogger, resolvePeakFlops } from './metrics/index.ts';
import { PhaseTimes } from './phase-times.ts';
import { probeAndPlan, probeWanted } from './probe-plan.ts';
import { captureRankState, restoreRankState } from './rank-checkpoint.ts';

export interface TrainRankArgs {
  configPath: string | null;
  overrides: string[];
  runDir: string;
  /** Decided by the launcher's plan. */
  dispatch: MoeStrategy;
  gradReduce: GradReduce;
  /** Measured sgemm GFLOP/s of the node (for MFU), and ranks sharing the node. */
  nodeSgemmGflops: number;
  ranksOnNode: number;
  /** Whether the launcher's stdout is a terminal (colours). */
  tty: boolean;
  /** Post compact status events to this BroadcastChannel (live view in the launcher). */
  liveChannel: string | null;
  /** BLAS threads per rank. */
  threads: number;
  /** Stop after this step without finishing (kill tests); default: run all steps. */
  stopAfter?: number;
  /** Which launch in this run folder (resume-guard.ts): metrics.jsonl rows carry it, so a replayed step is no duplicate. */
  attempt?: number;
  /** threads transport: the BroadcastChannel name under which the launcher serves the side pool. */
  poolChannel?: string | null;
}

export interface TrainRankResult {
  rank: number;
  steps: { step: number; loss: number; gradNorm: number; lr: number }[];
  resumedFrom: number | null;
  checkpoints: string[];
  peakBytes: number;
}

/** The RankJob a job config describes, with the launcher's plan decisions. */
export function rankJobOf(cfg: JobConfig, args: Pick<TrainRankArgs, 'dispatch' | 'gradReduce' | 'threads'>): RankJob {
  const model = modelConfigOf(cfg);
  return {
    model,
    degrees: degreesOf(cfg),
    dispatch: args.dispatch,
    gradReduce: args.gradReduce,
    divideFactor: cfg.comm.gradient_divide_factor,
    reshard: cfg.parallelism.fsdp_reshard_after_forward,
    ac: acModeOf(cfg),
    adamw: {
      lr: cfg.optimizer.lr,
      beta1: cfg.optimizer.beta1,
      beta2: cfg.optimizer.beta2,
      eps: cfg.optimizer.eps,
      weight_decay: cfg.optimizer.weight_decay,
      l2: cfg.optimizer.name === 'Adam',
    },
    schedule: {
      totalSteps: cfg.training.steps,
      warmupSteps: cfg.lr_scheduler.warmup_steps,
      decayRatio: cfg.lr_scheduler.decay_ratio,
      decayType: cfg.lr_scheduler.decay_type,
      minLrFactor: cfg.lr_scheduler.min_lr_factor,
    },
    maxNorm: cfg.training.max_norm,
    seed: cfg.debug.seed,
    weights: cfg.checkpoint.initial_load_path.endsWith('.safetensors') ? cfg.checkpoint.initial_load_path : undefined,
    threads: args.threads,
    paramDtype: cfg.training.mixed_precision_param as ParamDtype,
    reduceDtype: cfg.training.mixed_precision_reduce as ParamDtype,
    watchdogMs: cfg.comm.timeout_seconds * 1000,
  };
}

/** Gradient-accumulation microbatches per step (torchtitan: global / (local · batch degree)). */
export function microbatchesOf(cfg: JobConfig, batchDegree: number): number {
  const g = cfg.training.global_batch_size;
  const local = cfg.training.local_batch_size;
  if (g === -1) return 1;
  const per = local * batchDegree;
  if (g % per !== 0) {
    throw new Error(
      `[training] global_batch_size = ${g} must be a multiple of local_batch_size × data-parallel degree = ${local} × ${batchDegree} = ${per}`,
    );
  }
  return g / per;
}

export async function rankMain(ctx: RankContext<TrainRankArgs>): Promise<TrainRankResult> {
  let a = ctx.args;
  const cfg = loadJobConfig(a.configPath, a.overrides);
  if (probeWanted(cfg, ctx.transport)) {
    const p = await probeAndPlan(ctx.world, cfg);
    if (ctx.rank === 0) writeFileSync(join(a.runDir, 'plan.txt'), p.text);
    if (ctx.rank === 0) for (const c of p.changes) console.log(`start-up probe: ${c} (plan.txt)`);
    a = { ...a, dispatch: p.plan.dispatch.choice, gradReduce: p.plan.gradReduce.choice };
  }
  const job = rankJobOf(cfg, a);
  const spec = buildModelSpec(job.model);
  const log = (m: string) => {
    if (ctx.rank === 0) console.log(m);
  };
  const peak = resolvePeakFlops({
    configPeakFlops: cfg.metrics.peak_flops,
    nodeSgemmGflops: a.nodeSgemmGflops,
    ranksOnNode: a.ranksOnNode,
  });
  let host: RankHost | null = null;
  // Built before the model: torchtitan's first throughput window includes setup (torchtitan-semantics.md §8.8).
  const metrics = createMetricsLogger(cfg, {
    rank: ctx.rank,
    runDir: a.runDir,
    flopsPerToken: flopsPerToken(spec, cfg.training.seq_len),
    peak,
    stdoutIsTTY: a.tty,
    memoryStats: () => host!.alloc.stats(),
    resetMemoryPeak: () => host!.alloc.resetPeak(),
  });
  const sinks: EventSink[] = [];
  let recorder: TraceRecorder | null = null;
  if (cfg.trace.enable) {
    recorder = new TraceRecorder({
      rank: ctx.rank,
      file: runPaths(a.runDir).rankEvents(ctx.rank),
      capacity: Math.min(cfg.trace.max_events, 65_536),
      maxFileEvents: cfg.trace.max_events,
    });
    sinks.push(recorder);
  }
  const phases = new PhaseTimes();
  sinks.push(phases);
  let live: BroadcastChannel | null = null;
  let saver: CheckpointSaver | null = null;
  const remote: { pool: (SidePool & { close(): void }) | null } = { pool: null };
  // One pool per process: the ranks of a threads run are worker threads and use the launcher's.
  const pool = (): SidePool =>
    a.poolChannel ? (remote.pool ??= connectSidePool(a.poolChannel, ctx.rank)) : processPool();
  if (a.liveChannel) {
    live = new BroadcastChannel(a.liveChannel);
    sinks.push(liveForwarder(live));
  }
  try {
    host = await RankHost.create(ctx.world, job, teeSink(...sinks));
    if (recorder && (ctx.transport === 'mpi' || ctx.transport === 'ccl')) await alignRecorderClock(ctx.world, recorder);
    const { index: dpRank, degree: dpDegree } = host.mesh.batch;
    const loader = await openDataLoader(cfg, {
      dpRank,
      dpDegree,
      vocabSize: spec.vocabSize,
      log,
      encodeInPool: (tokenizerFile, texts) => pool().run({ kind: 'encode', tokenizerFile, texts }),
    });
    const ga = microbatchesOf(cfg, dpDegree);

    // ---- resume ----
    const folder = join(a.runDir, cfg.checkpoint.folder);
    let start = 0;
    let resumedFrom: number | null = null;
    const resumeDir = cfg.checkpoint.enable || cfg.checkpoint.initial_load_path ? findResume(cfg, folder, log) : null;
    if (resumeDir) {
      const ck = readCheckpoint(resumeDir.dir, { ranks: [ctx.rank < resumeDir.worldSize ? ctx.rank : 0] });
      const extras = ck.shards[0]!.extras as Record<string, unknown>;
      restoreRankState(host, resumeDir.dir, extras, { schedule: resumeDir.sameRun });
      if (resumeDir.sameRun) {
        start = resumeDir.step;
        resumedFrom = start;
        try {
          if (ctx.rank < resumeDir.worldSize && extras.data) loader.loadState(extras.data);
          else throw new DataStateError('the checkpoint has no data state for this rank');
        } catch (e) {
          if (!(e instanceof DataStateError)) throw e;
          log(
            `resume: data position not restored (${e.message}); data restarts from the beginning of this rank's shard`,
          );
        }
        if (resumeDir.hash !== configHash(cfg))
          log('resume: the checkpoint was written with other model/optimizer/training settings (config hash differs)');
      }
      if (resumeDir.sameRun) log(`resumed from ${resumeDir.dir} (step ${resumeDir.step})`);
      else
        log(
          `initialised from ${resumeDir.dir} (step ${resumeDir.step}): weights, AdamW state and expert biases; this run's steps, LR schedule and data start anew`,
        );
    }

    saver = cfg.checkpoint.enable
      ? new CheckpointSaver({
          mode: cfg.checkpoint.async_mode as 'disabled' | 'async',
          folder,
          rank: ctx.rank,
          worldSize: ctx.size,
          world: ctx.world,
          pool: cfg.checkpoint.async_mode === 'async' ? pool() : null,
          // Writing gigabytes per rank to a shared filesystem is not a step's collective: the waits around it are
          // bounded as long as start-up is.
          ioTimeoutMs: cfg.comm.init_timeout_seconds * 1000,
          timesFile: join(a.runDir, 'checkpoints.jsonl'),
          commit: (dir, step) => {
            const d = host!.mesh.layout.degrees;
            commitManifest(dir, { step, configHash: configHash(cfg), mesh: { ...d }, worldSize: ctx.size });
            if (cfg.checkpoint.keep_latest_k > 0) pruneCheckpoints(folder, cfg.checkpoint.keep_latest_k);
            log(`checkpoint: ${dir}`);
          },
        })
      : null;
    saver?.clearStalePartials(start, log);
    const tokensPerStep = ga * cfg.training.local_batch_size * (cfg.training.seq_len + 1);
    // The first documents are tokenized while the rest of start-up runs.
    loader.prefetch(2 * tokensPerStep);
    const steps: TrainRankResult['steps'] = [];
    const checkpoints: string[] = [];
    let lastBytes = host.bytesByGroup();
    const last = Math.min(cfg.training.steps, a.stopAfter ?? Infinity);
    for (let step = start + 1; step <= last; step++) {
      saver?.check();
      const mbs: Microbatch[] = [];
      for (let m = 0; m < ga; m++) {
        const b = loader.next();
        metrics.addBatch(b.ntokens, b.fetchMs);
        mbs.push({ tokens: b.tokens, labels: b.labels, B: b.batchSize, S: b.seqLen });
      }
      // Tokenizing for the next two steps runs in the side pool while this one computes.
      loader.prefetch(2 * tokensPerStep);
      const r = await host.step(mbs);
      // Start-up and the first step ran under init_timeout_seconds (slow joins, first-touch allocations, cold
      // caches); every later collective gets the per-step timeout.
      if (step === start + 1) ctx.world.setDefaultTimeout(cfg.comm.timeout_seconds * 1000);
      steps.push({ step, loss: r.globalAvgLoss, gradNorm: r.gradNorm, lr: r.lr });
      if (metrics.shouldLog(step)) {
        const now = host.bytesByGroup();
        const commBytes: Record<string, number> = {};
        for (const [g, c] of Object.entries(now))
          commBytes[g] = c.sent + c.received - ((lastBytes[g]?.sent ?? 0) + (lastBytes[g]?.received ?? 0));
        lastBytes = now;
        const extra: Record<string, number> = { attempt: a.attempt ?? 1 };
        for (const t of saver?.takeTimes() ?? []) {
          extra['checkpoint/step'] = t.step;
          extra['checkpoint/blocked_ms'] = t.blockedMs;
          extra['checkpoint/write_ms'] = t.writeMs;
        }
        metrics.log(step, {
          globalAvgLoss: r.globalAvgLoss,
          globalMaxLoss: r.globalMaxLoss,
          gradNorm: r.gradNorm,
          lr: r.lr,
          phasesMs: phases.take(),
          commBytes,
          extra,
        });
      }
      if (saver && (step % cfg.checkpoint.interval === 0 || step === cfg.training.steps)) {
        await saver.save(step, (copy) => captureRankState(host!, { step, data: loader.state(), rank: ctx.rank }, copy));
        checkpoints.push(stepDir(folder, step));
      }
    }
    await saver?.finish();
    saver = null;
    return { rank: ctx.rank, steps, resumedFrom, checkpoints, peakBytes: host.alloc.stats().peakTotal };
  } finally {
    recorder?.close();
    live?.close();
    saver?.abandon();
    remote.pool?.close();
    if (host) await host.close();
  }
}

interface ResumePoint {
  dir: string;
  step: number;
  worldSize: number;
  hash: string;
  /** A checkpoint of this run (continue its step count) or an initial load (weights + optimizer only). */
  sameRun: boolean;
}

function findResume(cfg: JobConfig, folder: string, log: (m: string) => void): ResumePoint | null {
  if (cfg.checkpoint.enable) {
    const skipped = (p: PartialCheckpoint) => log(`resume: ignoring incomplete checkpoint ${p.dir}: ${p.reason}`);
    const want = cfg.checkpoint.load_step;
    let pick: CompleteCheckpoint | null;
    if (want >= 0) {
      // The error names every complete step, so all of them are verified.
      const listing = listCheckpoints(folder);
      for (const p of listing.partial) skipped(p);
      pick = listing.complete.find((c) => c.step === want) ?? null;
      if (!pick) {
        throw new Error(
          `[checkpoint] load_step = ${want}: no complete checkpoint for that step in ${folder} (complete: ${listing.complete.map((c) => c.step).join(', ') || 'none'})`,
        );
      }
    } else {
      // Newest first: every rank runs this at start-up, and with keep_latest_k = 0 the folder holds every step ever
      // written, so verifying (hashing) them all would read the whole history to use one checkpoint.
      pick = latestComplete(folder, { skipped });
    }
    if (pick)
      return {
        dir: pick.dir,
        step: pick.step,
        worldSize: pick.manifest.worldSize,
        hash: pick.manifest.configHash,
        sameRun: true,
      };
  }
  const init = cfg.checkpoint.initial_load_path;
  if (init && !init.endsWith('.safetensors')) {
    const l = initialCheckpoint(init);
    return { dir: l.dir, step: l.step, worldSize: l.manifest.worldSize, hash: l.manifest.configHash, sameRun: false };
  }
  return null;
}

/** Why initial_load_path cannot be used before looking inside it (the launcher asks too), or null. */
export function initialLoadPathProblem(init: string): string | null {
  const path = resolve(init);
  if (existsSync(path)) return null;
  return `[checkpoint] initial_load_path = ${init}: ${path} does not exist; give a checkpoint folder, one of its step-N folders or a weights .safetensors file`;
}

/**
 * `initial_load_path` names a step folder (`…/step-N`, or a bare `step-N` in the working directory: that one is
 * verified alone, not with its siblings) or a checkpoint folder (its newest complete step). When nothing usable
 * is there, the error says why — the corrupted file, the missing manifest, the folder that does not exist.
 */
function initialCheckpoint(init: string): CompleteCheckpoint {
  const what = `[checkpoint] initial_load_path = ${init}`;
  const path = resolve(init);
  const missing = initialLoadPathProblem(init);
  if (missing) throw new Error(missing);
  const stepAt = /^step-(\d+)$/.exec(basename(path));
  if (stepAt) {
    const step = Number(stepAt[1]);
    try {
      return { step, dir: path, manifest: verifyCheckpoint(path, 'checksum', step) };
    } catch (e) {
      if (e instanceof CheckpointError) throw new Error(`${what}: ${e.message}`);
      throw e;
    }
  }
  const skipped: string[] = [];
  const l = latestComplete(path, { skipped: (p) => skipped.push(`${basename(p.dir)}: ${p.reason}`) });
  if (l) return l;
  throw new Error(
    `${what}: no complete checkpoint in ${path}${skipped.length ? ` (${skipped.join('; ')})` : ' (it holds no step-N folder)'}`,
  );
}

/** Forwards the events the live view needs (state changes, collectives) to the launcher, compactly. */
function liveForwarder(ch: BroadcastChannel): EventSink {
  let batch: TraceEvent[] = [];
  let timer: NodeJS.Timeout | null = null;
  const flush = () => {
    timer = null;
    if (batch.length) ch.postMessage(batch);
    batch = [];
  };
  return {
    record(e) {
      if (e.kind === 'counter') return;
      batch.push(e);
      if (!timer) {
        timer = setTimeout(flush, 100);
        timer.unref?.();
      }
    },
  };
}
