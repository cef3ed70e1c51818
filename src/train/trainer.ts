// `moe-actors train`, the launcher side: load and validate the job config, plan (mesh, strategies, memory),
// create the run folder, measure the machine's sgemm peak (for MFU), launch the training rank program on the
// chosen transport, and turn the recorded events into trace.json and timeline.html afterwards.

import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BroadcastChannel } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import pc from 'picocolors';
import { requireCcl } from '../comm/ccl/native.ts';
import { isMpiJobTransport, launch, launchFailure, mpiJob, type Fault, type TransportName } from '../comm/launch.ts';
import type { TraceEvent } from '../protocols/events.ts';
import { formatPlan } from '../protocols/plan-format.ts';
import type { Plan } from '../protocols/planner.ts';
import { planJob } from './plan-job.ts';
import { getKernels, setOpenMpLayout } from '../tensor/kernels.ts';
import { LiveView, runPaths, viewRun, writeReport } from '../trace/index.ts';
import {
  ConfigError,
  configPathProblems,
  configWarnings,
  loadJobConfig,
  modelConfigOf,
  type JobConfig,
} from './job-config.ts';
import { guardResume, nextAttempt } from './resume-guard.ts';
import { checkResources } from './resource-check.ts';
import { isInside, samePath } from './paths.ts';
import { dataInputProblem } from './data/index.ts';
import { ensureDir, makeFolder } from './ensure-dir.ts';
import { lockRunDir, type RunLock } from './run-lock.ts';
import { measureSgemmPeak } from './metrics/index.ts';
import type { ParamDtype } from '../tensor/precision.ts';
import { initialLoadPathProblem, type TrainRankArgs, type TrainRankResult } from './train-rank.ts';
import { closeSidePool, configureSidePool, serveSidePool } from './pool/pool.ts';
import { poolThreads } from './pool/size.ts';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const DEFAULT_CONFIG = join(ROOT, 'configs', 'debug_ep4.toml');
const RANK_PROGRAM = fileURLToPath(new URL('./train-rank.ts', import.meta.url));

export interface TrainOptions {
  config?: string;
  transport?: string;
  ranks?: string | number;
  live?: boolean;
  dryRun?: boolean;
  /** Stop after this step (tests of crash/resume). */
  stopAfter?: number;
  /** Print nothing but errors (tests). */
  quiet?: boolean;
  /** Faults to inject (hang and failure tests); inproc only. */
  faults?: Fault[];
  /** Train from step 1 even though the run folder has checkpoints (they are moved aside; see resume-guard.ts). */
  startOver?: boolean;
  /** Start even when the plan does not fit this host's memory or rank ceiling (resource-check.ts). */
  skipResourceCheck?: boolean;
}

export interface TrainOutcome {
  runDir: string;
  plan: Plan;
  results: TrainRankResult[];
  trace: string | null;
  timeline: string | null;
  report: string | null;
}

/** The config plus the CLI's --transport/--ranks, as overrides (so they are validated like the file's fields). */
export function loadTrainConfig(opts: TrainOptions, overrides: readonly string[]): JobConfig {
  const extra: string[] = [];
  if (opts.transport !== undefined) extra.push('--comm.transport', String(opts.transport));
  if (opts.ranks !== undefined) extra.push('--comm.ranks', String(opts.ranks));
  return loadJobConfig(opts.config ?? DEFAULT_CONFIG, [...overrides, ...extra]);
}

/** World size: [comm] ranks on inproc/threads; under mpi, what mpiexec started. */
export function worldSizeOf(cfg: JobConfig): number {
  if (!isMpiJobTransport(cfg.comm.transport)) return cfg.comm.ranks;
  const job = mpiJob();
  if (!job) {
    throw new ConfigError(
      `[comm] transport = "${cfg.comm.transport}" runs inside \`mpiexec.mpich -n N node bin/moe-actors.mjs train …\` (or scripts/launch-mpi.sh${cfg.comm.transport === 'ccl' ? ' --transport ccl' : ''}); no MPI job was found in the environment (PMI_SIZE unset)`,
    );
  }
  return job.size;
}

export { planJob } from './plan-job.ts';

function runName(cfg: JobConfig): string {
  if (cfg.job.run_name) return cfg.job.run_name;
  const base = cfg.source === '<defaults>' ? 'run' : basename(cfg.source).replace(/\.toml$/, '');
  const t = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-');
  return `${base}-${t}`;
}

export async function runTraining(opts: TrainOptions, overrides: readonly string[]): Promise<TrainOutcome | null> {
  const cfg = loadTrainConfig(opts, overrides);
  const transport = cfg.comm.transport as TransportName;
  const mpiJobRun = isMpiJobTransport(transport);
  if (transport === 'ccl') requireCcl();
  const size = worldSizeOf(cfg);
  const isRank0 = !mpiJobRun || (process.env.PMI_RANK ?? '0') === '0';
  const say = (m: string) => {
    if (isRank0 && !opts.quiet) console.log(m);
  };
  if (opts.faults?.length && transport !== 'inproc')
    throw new ConfigError(
      `fault injection (--fault) needs the inproc transport: add --transport inproc (got "${transport}")`,
    );
  const dataProblem = await dataInputProblem(cfg, modelConfigOf(cfg).args.vocab_size);
  if (dataProblem) throw new ConfigError(dataProblem);
  const pathProblems = configPathProblems(cfg);
  if (pathProblems.length) throw new ConfigError(pathProblems.join('\n'));
  for (const w of configWarnings(cfg)) say(pc.yellow(`warning: ${w}`));
  // The ranks check what is there (a complete, uncorrupted checkpoint); a wrong path needs no ranks to find.
  const initProblem = cfg.checkpoint.initial_load_path
    ? initialLoadPathProblem(cfg.checkpoint.initial_load_path)
    : null;
  if (initProblem) throw new ConfigError(initProblem);
  const plan = planJob(cfg, size);
  say(
    pc.bold(
      `moe-actors train: ${cfg.source === DEFAULT_CONFIG ? 'the embedded debug job (configs/debug_ep4.toml)' : cfg.source}, ${size} rank${size === 1 ? '' : 's'} on ${transport}`,
    ),
  );
  say(formatPlan(plan));
  const ranksOnHost = mpiJobRun ? Number(process.env.MPI_LOCALNRANKS ?? 1) : size;
  if (!opts.skipResourceCheck) checkResources({ plan, transport, ranksOnHost });
  // Before anything is measured or written: an input that is also an output of this run.
  const firstRunDir = resolve(cfg.job.dump_folder, runName(cfg));
  checkInputsOutsideOutputs(cfg, firstRunDir);
  if (opts.dryRun) {
    say(pc.green('dry run: the config is valid; no ranks were started'));
    return null;
  }
  const threads = cfg.comm.blas_threads || Math.max(1, Math.floor(availableParallelism() / ranksOnHost));
  // The OpenMP wait policy depends on how many compute threads the job puts on this node; libgomp reads it when the
  // kernels load, so it is decided first (a bounded spin only when every matmul is on oneDNN and cores suffice).
  // Under MPI without MPICH's MPI_LOCALNRANKS the ranks sharing this node are unknown (ranksOnHost guesses 1): give
  // no layout, so the loader stays passive rather than spin beside ranks it cannot see.
  const layoutKnown = !mpiJobRun || process.env.MPI_LOCALNRANKS !== undefined;
  const wait = setOpenMpLayout({ computeThreads: layoutKnown ? ranksOnHost * threads : undefined });
  if (wait && isRank0) say(wait.line);
  // Decides OPENBLAS_CORETYPE (and the wait policy) for the process before any worker starts; gives MFU its peak.
  const k = getKernels();
  // MFU's peak is the matmul peak of the run's compute dtype (bf16 runs against the bf16 rate).
  const peak = measureSgemmPeak(k, {
    threads: mpiJobRun ? threads : Math.min(availableParallelism(), Math.max(threads, 1) * size),
    dtype: cfg.training.mixed_precision_param as ParamDtype,
  });
  // Under MPI every rank measured its own peak with its own threads, at the same time as the others: that is
  // already a per-rank figure. In one process the node's peak is shared by the ranks.
  const ranksOnNode = mpiJobRun ? 1 : size;
  if (mpiJobRun && !cfg.job.run_name) {
    throw new ConfigError(
      `under ${transport} every rank must agree on the run folder: set --job.run_name (scripts/launch-mpi.sh does)`,
    );
  }
  // Under MPI rank 0 makes, locks and fills the folder; the other ranks only write their own files into it.
  let runDir = firstRunDir;
  let lock: RunLock | null = null;
  const owner = !mpiJobRun || isRank0;
  if (owner) ({ runDir, lock } = claimRunDir(cfg, runDir, say));
  let attempt: number;
  try {
    attempt = nextAttempt(runDir);
    // Every MPI rank checks (so all stop together); only the folder's owner moves anything. A rank that looks while
    // the owner moves folders may see one vanish: that race is the owner's to report, not this rank's.
    try {
      guardResume(cfg, runDir, { startOver: !!opts.startOver, attempt, log: say, move: owner });
    } catch (e) {
      if (owner || e instanceof ConfigError) throw e;
    }
    if (owner) writeRunFiles(runDir, cfg, plan);
  } catch (e) {
    lock?.release();
    throw e;
  }
  try {
    return await trainInRunDir({
      opts,
      overrides,
      cfg,
      transport,
      size,
      isRank0,
      say,
      plan,
      peak,
      threads,
      ranksOnNode,
      runDir,
      attempt,
    });
  } finally {
    lock?.release();
  }
}

interface RunContext {
  opts: TrainOptions;
  overrides: readonly string[];
  cfg: JobConfig;
  transport: TransportName;
  size: number;
  isRank0: boolean;
  say: (m: string) => void;
  plan: Plan;
  peak: ReturnType<typeof measureSgemmPeak>;
  threads: number;
  ranksOnNode: number;
  runDir: string;
  attempt: number;
}

/**
 * The run folder, made and locked (run-lock.ts). A name given by --job.run_name is reused as it is (resume); an
 * automatic one (config and time to the second) must be a new folder, so a job started in the same second as
 * another gets `-2`, `-3`, ….
 */
function claimRunDir(cfg: JobConfig, runDir: string, log: (m: string) => void): { runDir: string; lock: RunLock } {
  if (cfg.job.run_name) {
    ensureDir(runDir, '[job] dump_folder');
    return { runDir, lock: lockRunDir(runDir, log) };
  }
  ensureDir(cfg.job.dump_folder, '[job] dump_folder');
  for (let i = 1; i <= 100; i++) {
    const dir = i === 1 ? runDir : `${runDir}-${i}`;
    if (makeFolder(dir, '[job] dump_folder')) return { runDir: dir, lock: lockRunDir(dir, log) };
  }
  throw new ConfigError(`[job] dump_folder: ${runDir} and 99 numbered variants exist already; set --job.run_name`);
}

async function trainInRunDir(r: RunContext): Promise<TrainOutcome> {
  const { opts, overrides, cfg, transport, size, isRank0, say, plan, peak, threads, ranksOnNode, runDir, attempt } = r;
  const mpiJobRun = isMpiJobTransport(transport);
  say(`run folder: ${runDir}`);
  say(
    `MFU peak: matmul ${peak.gflops.toFixed(1)} GFLOP/s on ${peak.threads} thread(s) (${peak.blas}); ${threads} BLAS thread(s) per rank`,
  );

  let live: LiveView | null = null;
  let channel: BroadcastChannel | null = null;
  const liveName = opts.live && !mpiJobRun ? `moe-actors-live-${process.pid}` : null;
  if (liveName) {
    live = new LiveView();
    channel = new BroadcastChannel(liveName);
    channel.onmessage = (m) => {
      for (const e of (m as { data: TraceEvent[] }).data) live!.record(e);
    };
    live.start();
  }
  const args: TrainRankArgs = {
    configPath: cfg.source === '<defaults>' ? null : cfg.source,
    overrides: [...overrides, '--comm.transport', transport, '--comm.ranks', String(size)],
    runDir,
    dispatch: plan.dispatch.choice,
    gradReduce: plan.gradReduce.choice,
    nodeSgemmGflops: peak.gflops,
    ranksOnNode,
    tty: !!process.stdout.isTTY,
    liveChannel: liveName,
    threads,
    stopAfter: opts.stopAfter,
    attempt,
  };
  // Ctrl-C on a slow or hung run: stop the ranks through the transport so the run still reports where each rank
  // was (flight dumps, diagnosis, timeline). A second Ctrl-C quits at once. SIGTERM (a job scheduler, `kill`) and
  // SIGHUP (the terminal closed) are the same request and get the same report and lock release. MPI ranks handle
  // their signals themselves (comm/mpi/world.ts).
  const interrupt = mpiJobRun ? null : new AbortController();
  let stopSignal: NodeJS.Signals = 'SIGINT';
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupt!.signal.aborted) process.exit(SIGNAL_EXIT[sig]);
    stopSignal = sig;
    console.error(
      pc.yellow(
        `interrupted${sig === 'SIGINT' ? '' : ` (${sig})`}: stopping the ranks and collecting where each one is (Ctrl-C again to quit at once)`,
      ),
    );
    interrupt!.abort(`interrupted by ${sig === 'SIGINT' ? 'the user' : 'a signal'} (${sig})`);
  };
  if (interrupt) for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  // The side pool (async checkpoint writes, tokenizing) gets the cores the ranks' BLAS threads leave.
  const localRanks = mpiJobRun ? Number(process.env.MPI_LOCALNRANKS ?? 1) : 1;
  configureSidePool(
    poolThreads({
      cores: availableParallelism(),
      computeThreadsPerRank: threads,
      ranksInProcess: mpiJobRun ? 1 : size,
      processesOnNode: localRanks,
    }),
  );
  const poolServer =
    transport === 'threads'
      ? serveSidePool((args.poolChannel = `moe-actors-pool-${process.pid}-${Date.now()}`), size)
      : null;
  let result;
  try {
    result = await launch<TrainRankArgs, TrainRankResult>(
      {
        transport,
        size,
        profile: cfg.comm.profile,
        // Start-up and the first step; the ranks move to timeout_seconds after it (torchtitan's two timeouts).
        timeoutMs: cfg.comm.init_timeout_seconds * 1000,
        seed: cfg.comm.seed,
        ranksPerNode: cfg.comm.ranks_per_node || undefined,
        flightEntries: cfg.comm.flight_recorder_entries,
        dumpDir: runPaths(runDir).flight,
        faults: opts.faults,
        signal: interrupt?.signal,
      },
      { module: RANK_PROGRAM },
      args,
    );
  } finally {
    if (interrupt) for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
    live?.stop();
    channel?.close();
    poolServer?.close();
    // Writes still running finish first (each is atomic anyway); then no pool thread is left.
    await closeSidePool();
  }
  for (const r of result.remarks ?? []) say(pc.yellow(r));
  const failure = interrupt?.signal.aborted
    ? `training interrupted by ${stopSignal === 'SIGINT' ? 'the user' : 'a signal'} (${stopSignal}); each rank was stopped where it stood${result.diagnosis ? `:\n${result.diagnosis}` : ''}`
    : launchFailure('training', result);
  if (failure) {
    // The failed run's timeline, with its who-waited-for-whom panel, is what one opens next; a problem drawing it
    // must not hide the training failure.
    let timelineLine = '';
    let viewed = false;
    if (cfg.trace.enable && isRank0 && existsSync(runPaths(runDir).events)) {
      try {
        const v = viewRun(runDir);
        viewed = true;
        timelineLine = `\ntimeline of the failed run: ${v.timeline}${v.report ? `\nplots: ${v.report}` : ''}`;
      } catch (e) {
        timelineLine = `\n(the timeline could not be drawn: ${(e as Error).message.split('\n')[0]})`;
      }
    }
    if (isRank0 && !viewed) {
      const report = reportQuietly(runDir);
      if (report) timelineLine += `\nplots: ${report}`;
    }
    const err = new Error(
      failure +
        `\nflight-recorder dumps: ${runPaths(runDir).flight} (moe-actors inspect ${runPaths(runDir).flight}); events: ${runPaths(runDir).events}` +
        timelineLine,
    );
    // An interrupted run exits as a shell expects of Ctrl-C.
    throw interrupt?.signal.aborted ? Object.assign(err, { exitCode: SIGNAL_EXIT[stopSignal] }) : err;
  }
  const results = result.outcomes.map((o) => (o as { value: TrainRankResult }).value);
  let trace: string | null = null;
  let timeline: string | null = null;
  let report: string | null = null;
  if (cfg.trace.enable && isRank0 && existsSync(runPaths(runDir).events)) {
    const v = viewRun(runDir);
    trace = v.trace;
    timeline = v.timeline;
    report = v.report;
    for (const w of [...v.warnings, ...v.traceErrors]) say(pc.yellow(`trace: ${w}`));
  } else if (isRank0) report = reportQuietly(runDir, say);
  const last = results[0]?.steps.at(-1);
  say(pc.green(`done: ${results[0]?.steps.length ?? 0} steps${last ? `, final loss ${last.loss.toFixed(5)}` : ''}`));
  say(`outputs: ${runDir}`);
  if (timeline)
    say(`  timeline: ${timeline}\n  trace (Perfetto): ${trace}\n  metrics: ${join(runDir, 'metrics.jsonl')}`);
  if (report) say(`  plots: ${report}`);
  return { runDir, plan, results, trace, timeline, report };
}

/** report.html of the run; a problem drawing it is reported, never the run's outcome. */
function reportQuietly(runDir: string, say?: (m: string) => void): string | null {
  try {
    return writeReport(runDir);
  } catch (e) {
    say?.(pc.yellow(`report.html could not be written: ${(e as Error).message.split('\n')[0]}`));
    return null;
  }
}

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** 128 + the signal number, as a shell reports a process ended by it. */
const SIGNAL_EXIT: Record<NodeJS.Signals, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as Record<
  NodeJS.Signals,
  number
>;

/** Files and folders a run writes in its folder (runPaths names the trace ones). */
function runOutputs(cfg: JobConfig, runDir: string): { files: string[]; folders: string[] } {
  const p = runPaths(runDir);
  return {
    files: ['plan.txt', 'job.json', 'metrics.jsonl', 'trace.json', 'timeline.html'].map((f) => join(runDir, f)),
    folders: [p.events, p.flight, join(runDir, cfg.checkpoint.folder)],
  };
}

/**
 * Every input the config names is checked against every output of the run: a dataset or weights file that is also
 * written by the run (metrics.jsonl as dataset, initial_load_path inside this run's own checkpoint folder, where
 * keep_latest_k prunes) would be overwritten or deleted while it is read.
 */
function checkInputsOutsideOutputs(cfg: JobConfig, runDir: string): void {
  const inputs: [string, string][] = [];
  if (cfg.source !== '<defaults>') inputs.push([cfg.source, '--config']);
  if (cfg.training.dataset_path) inputs.push([cfg.training.dataset_path, '[training] dataset_path']);
  if (cfg.checkpoint.initial_load_path)
    inputs.push([cfg.checkpoint.initial_load_path, '[checkpoint] initial_load_path']);
  if (cfg.model.hf_assets_path) inputs.push([cfg.model.hf_assets_path, '[model] hf_assets_path']);
  const out = runOutputs(cfg, runDir);
  for (const [path, what] of inputs) {
    const file = out.files.find((f) => samePath(f, path));
    const folder = out.folders.find((d) => isInside(path, d));
    if (!file && !folder) continue;
    const hint =
      what === '[checkpoint] initial_load_path' && folder === out.folders[2]
        ? ' (to continue this run, drop initial_load_path: [checkpoint] enable resumes from its newest checkpoint)'
        : '';
    throw new ConfigError(
      `${what} ${path} is ${file ? 'the file' : 'inside the folder'} ${file ?? folder} that this run writes; it would be overwritten while it is read — use another run folder (--job.run_name) or move the input${hint}`,
    );
  }
}

function writeRunFiles(runDir: string, cfg: JobConfig, plan: Plan): void {
  // A config given from the run folder itself (outputs/<run>/config.toml) is already there: copying a file onto
  // itself truncates it.
  if (cfg.source !== '<defaults>' && !samePath(cfg.source, join(runDir, 'config.toml')))
    copyFileSync(cfg.source, join(runDir, 'config.toml'));
  writeFileSync(join(runDir, 'plan.txt'), formatPlan(plan) + '\n');
  writeFileSync(join(runDir, 'job.json'), JSON.stringify(cfg, null, 1) + '\n');
}
