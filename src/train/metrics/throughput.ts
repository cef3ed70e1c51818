// Throughput as torchtitan measures it (torchtitan-semantics.md §6), per rank:
//   tps    = tokens this rank loaded since the last log (Σ labels.numel()) / Δt, Δt = wall time since the previous
//            log — for the first log, since the meter was built, so model build and init are included (as in
//            torchtitan, where the MetricsProcessor is built before the model);
//   tflops = flops_per_token · tps / 1e12;   mfu(%) = 100 · flops_per_token · tps / peak FLOP/s.
// tp/cp/pp would divide tps further; moe-actors has none of them (degree 1).

export interface ThroughputWindow {
  /** Seconds since the previous log (or construction). */
  dtS: number;
  tokens: number;
  tps: number;
  /** Mean batch fetch time in the window (torchtitan's time_metrics/data_loading(s)). */
  dataLoadingS: number;
  /** 100 · Σ fetch / Δt. */
  dataLoadingPct: number;
  batches: number;
}

export class ThroughputMeter {
  private last: number;
  private tokens = 0;
  private fetchMs = 0;
  private batches = 0;

  constructor(private readonly now: () => number = () => performance.now()) {
    this.last = now();
  }

  /** One microbatch this rank loaded: its labels.numel() and how long fetching it took. */
  addBatch(ntokens: number, fetchMs = 0): void {
    this.tokens += ntokens;
    this.fetchMs += fetchMs;
    this.batches++;
  }

  /** Closes the window at a log and starts the next one. */
  take(): ThroughputWindow {
    const t = this.now();
    const dtS = Math.max((t - this.last) / 1000, 1e-9);
    const w: ThroughputWindow = {
      dtS,
      tokens: this.tokens,
      tps: this.tokens / dtS,
      dataLoadingS: this.batches ? this.fetchMs / 1000 / this.batches : 0,
      dataLoadingPct: (100 * this.fetchMs) / 1000 / dtS,
      batches: this.batches,
    };
    this.last = t;
    this.tokens = 0;
    this.fetchMs = 0;
    this.batches = 0;
    return w;
  }
}

export function tflopsOf(tps: number, flopsPerToken: number): number {
  return (flopsPerToken * tps) / 1e12;
}

/** MFU in percent of `peakFlops` (FLOP/s of one rank). */
export function mfuPctOf(tps: number, flopsPerToken: number, peakFlops: number): number {
  return peakFlops > 0 ? (100 * flopsPerToken * tps) / peakFlops : 0;
}
