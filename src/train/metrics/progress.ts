// A progress bar for long phases (checkpoint writes, model init, data scans): cli-progress on a terminal, plain
// lines elsewhere (CI logs, files, MPI output where every rank's stdout is merged) — a start line, one line per
// 10 %, and a done line with the time taken.

import cliProgress from 'cli-progress';

export interface Progress {
  update(value: number): void;
  increment(by?: number): void;
  stop(): void;
}

export interface ProgressOptions {
  stream?: NodeJS.WriteStream | { isTTY?: boolean; write(s: string): unknown };
  /** Force the bar (true) or plain lines (false); default: the stream's isTTY. */
  tty?: boolean;
  unit?: string;
}

export function createProgress(label: string, total: number, opts: ProgressOptions = {}): Progress {
  const stream = opts.stream ?? process.stderr;
  const tty = opts.tty ?? stream.isTTY === true;
  const unit = opts.unit ? ` ${opts.unit}` : '';
  if (tty) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${label} [{bar}] {percentage}% | {value}/{total}${unit} | {duration_formatted} (eta {eta_formatted})`,
        stream: stream as NodeJS.WritableStream,
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0);
    return {
      update: (v) => bar.update(v),
      increment: (by = 1) => bar.increment(by),
      stop: () => bar.stop(),
    };
  }
  const t0 = performance.now();
  let value = 0;
  let lastDecile = 0;
  stream.write(`${label}: 0/${total}${unit}\n`);
  const report = () => {
    const decile = total > 0 ? Math.floor((10 * value) / total) : 10;
    if (decile > lastDecile && decile < 10) {
      lastDecile = decile;
      stream.write(`${label}: ${value}/${total}${unit} (${decile * 10}%)\n`);
    }
  };
  let stopped = false;
  return {
    update: (v) => {
      value = v;
      report();
    },
    increment: (by = 1) => {
      value += by;
      report();
    },
    stop: () => {
      if (stopped) return;
      stopped = true;
      stream.write(`${label}: ${value}/${total}${unit} done in ${((performance.now() - t0) / 1000).toFixed(1)}s\n`);
    },
  };
}
