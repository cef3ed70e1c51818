// One rank's metrics: at every logged step (step 1 and every log_freq-th, as torchtitan) it closes the throughput
// window, takes the memory peaks (and resets them), prints torchtitan's console line (on the printing ranks) and
// appends one record to outputs/<run>/metrics.jsonl (on every rank).
//
// Build it early — before the model — because torchtitan's first tps/MFU window starts at the MetricsProcessor's
// construction and so includes model build and init (torchtitan-semantics.md §8.8).

import { join } from 'node:path';
import type { JobConfig } from '../job-config.ts';
import type { MemoryStats } from '../../tensor/allocator.ts';
import { formatConsoleLine, useColor } from './console-line.ts';
import { JsonlWriter } from './jsonl.ts';
import { gib, memorySnapshot, pctOf } from './memory.ts';
import type { PeakFlops } from './peak.ts';
import { mfuPctOf, tflopsOf, ThroughputMeter } from './throughput.ts';

export interface StepMetrics {
  /** torchtitan's global_avg_loss: Σ over the loss mesh of the step's loss (the global per-token mean). */
  globalAvgLoss: number;
  /** torchtitan's global_max_loss: max over ranks of the rank's own mean loss. */
  globalMaxLoss: number;
  /** Pre-clip total gradient norm. */
  gradNorm: number;
  lr: number;
  /** Σ over the loss mesh of every rank's cumulative labels.numel() (the caller reduces it). */
  nTokensSeen?: number;
  /** Milliseconds per protocol phase in this window (e.g. compute, communication, waiting); added to addPhase's. */
  phasesMs?: Readonly<Record<string, number>>;
  /** Bytes moved per communication group in this window; added to addCommBytes'. */
  commBytes?: Readonly<Record<string, number>>;
  /** Anything else worth a column (numbers or short strings). */
  extra?: Readonly<Record<string, number | string | boolean>>;
}

export interface MetricsLoggerOptions {
  rank: number;
  logFreq: number;
  flopsPerToken: number;
  peak: PeakFlops;
  /** Print the console line on this rank (torchtitan's launcher shows rank 0 by default). */
  print: boolean;
  color: boolean;
  /** metrics.jsonl path, or null to write none. */
  jsonlPath: string | null;
  memoryStats?: () => MemoryStats;
  /** Called after each log: torchtitan resets the allocator's peak statistics there. */
  resetMemoryPeak?: () => void;
  out?: (line: string) => void;
  now?: () => number;
  /** Machine memory for the % figures (default os.totalmem()). */
  totalMemoryBytes?: number;
}

export type MetricsRecord = Record<string, number | string | boolean | null>;

export class MetricsLogger {
  private readonly meter: ThroughputMeter;
  private readonly jsonl: JsonlWriter | null;
  private phases: Record<string, number> = {};
  private comm: Record<string, number> = {};

  constructor(readonly opts: MetricsLoggerOptions) {
    this.meter = new ThroughputMeter(opts.now);
    this.jsonl = opts.jsonlPath ? new JsonlWriter(opts.jsonlPath) : null;
  }

  /** torchtitan logs at step 1 and at every multiple of log_freq. */
  shouldLog(step: number): boolean {
    return step === 1 || step % this.opts.logFreq === 0;
  }

  /** A microbatch this rank loaded (Batch.ntokens, Batch.fetchMs). */
  addBatch(ntokens: number, fetchMs = 0): void {
    this.meter.addBatch(ntokens, fetchMs);
  }

  addPhase(name: string, ms: number): void {
    this.phases[name] = (this.phases[name] ?? 0) + ms;
  }

  addCommBytes(group: string, bytes: number): void {
    this.comm[group] = (this.comm[group] ?? 0) + bytes;
  }

  /** Logs step `step` (call only when shouldLog(step)); returns the record written. */
  log(step: number, m: StepMetrics): MetricsRecord {
    const o = this.opts;
    const w = this.meter.take();
    const mem = memorySnapshot(o.memoryStats?.(), o.totalMemoryBytes);
    const tflops = tflopsOf(w.tps, o.flopsPerToken);
    const mfu = mfuPctOf(w.tps, o.flopsPerToken, o.peak.flops);
    const memPct = pctOf(mem.peakBytes, mem.totalBytes);

    const rec: MetricsRecord = {
      step,
      rank: o.rank,
      time: Date.now() / 1000,
      'loss_metrics/global_avg_loss': m.globalAvgLoss,
      'loss_metrics/global_max_loss': m.globalMaxLoss,
      grad_norm: m.gradNorm,
      lr: m.lr,
      'throughput(tps)': w.tps,
      tflops,
      'mfu(%)': mfu,
      'time_metrics/end_to_end(s)': w.dtS / o.logFreq,
      'time_metrics/data_loading(s)': w.dataLoadingS,
      'time_metrics/data_loading(%)': w.dataLoadingPct,
      'memory/max_active(GiB)': gib(mem.peakBytes),
      'memory/max_active(%)': memPct,
      'memory/rss(GiB)': gib(mem.rssBytes),
      'memory/rss(%)': pctOf(mem.rssBytes, mem.totalBytes),
      'memory/max_rss(GiB)': gib(mem.maxRssBytes),
      // Where RSS growth comes from in a soak: this rank's V8 heap, and its ArrayBuffers (tensors, pools).
      'memory/heap_used(GiB)': gib(mem.heapUsedBytes),
      'memory/array_buffers(GiB)': gib(mem.arrayBuffersBytes),
      tokens_since_last_log: w.tokens,
      flops_per_token: o.flopsPerToken,
      peak_flops: o.peak.flops,
    };
    if (m.nTokensSeen !== undefined) rec.n_tokens_seen = m.nTokensSeen;
    if (mem.peakByCategory)
      for (const [c, b] of Object.entries(mem.peakByCategory)) rec[`memory/max_active/${c}(GiB)`] = gib(b);
    for (const [k, v] of Object.entries(sum(this.phases, m.phasesMs))) rec[`time_phases/${k}(ms)`] = v;
    for (const [k, v] of Object.entries(sum(this.comm, m.commBytes))) rec[`comm/${k}(bytes)`] = v;
    if (m.extra) for (const [k, v] of Object.entries(m.extra)) rec[k] = v;
    for (const [k, v] of Object.entries(rec)) if (typeof v === 'number' && !Number.isFinite(v)) rec[k] = null;

    if (o.print) {
      const line = formatConsoleLine(
        {
          step,
          loss: m.globalAvgLoss,
          gradNorm: m.gradNorm,
          memoryGiB: gib(mem.peakBytes),
          memoryPct: memPct,
          tps: w.tps,
          tflops,
          mfuPct: mfu,
        },
        o.color,
      );
      (o.out ?? ((l: string) => process.stdout.write(l + '\n')))(line);
    }
    this.jsonl?.append(rec);
    this.phases = {};
    this.comm = {};
    o.resetMemoryPeak?.();
    return rec;
  }
}

function sum(a: Record<string, number>, b?: Readonly<Record<string, number>>): Record<string, number> {
  const out = { ...a };
  if (b) for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v;
  return out;
}

export interface CreateMetricsLoggerOptions {
  rank: number;
  /** outputs/<run> */
  runDir: string;
  flopsPerToken: number;
  peak: PeakFlops;
  /** Ranks that print the console line (default: rank 0 only). */
  printRanks?: readonly number[];
  memoryStats?: () => MemoryStats;
  resetMemoryPeak?: () => void;
  out?: (line: string) => void;
  /**
   * Whether the terminal shows colours. Decide it in the launching process and pass it down: inside a worker
   * thread (threads transport) or under mpiexec, process.stdout is a pipe and never a TTY.
   */
  stdoutIsTTY?: boolean;
}

/** A logger configured by [metrics] (log_freq, disable_color_printing, save_jsonl). */
export function createMetricsLogger(cfg: JobConfig, o: CreateMetricsLoggerOptions): MetricsLogger {
  return new MetricsLogger({
    rank: o.rank,
    logFreq: cfg.metrics.log_freq,
    flopsPerToken: o.flopsPerToken,
    peak: o.peak,
    print: (o.printRanks ?? [0]).includes(o.rank),
    color: useColor(
      cfg.metrics.disable_color_printing,
      o.stdoutIsTTY === undefined ? process.stdout : { isTTY: o.stdoutIsTTY },
    ),
    jsonlPath: cfg.metrics.save_jsonl ? join(o.runDir, 'metrics.jsonl') : null,
    memoryStats: o.memoryStats,
    resetMemoryPeak: o.resetMemoryPeak,
    out: o.out,
  });
}
