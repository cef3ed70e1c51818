// How busy the node's cores are right now, for choices that must not fight other work for the cores (the OpenMP
// wait policy). The 1-minute load average lags by a minute: after any earlier work (an install, a previous run, a
// bench's warm-up) it still reads above half a core on an idle node, so it kept a quiet node passive. /proc/stat
// over a short window says what the cores do now.
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';

export interface NodeBusy {
  /** Cores' worth of time spent busy (not idle, not waiting for I/O) during the window, 0..cores. */
  busyCores: number;
  /** What the figure is, for start-up lines. */
  busySource: string;
}

/** The aggregate `cpu` line of /proc/stat: [busy, total] jiffies; undefined where it cannot be read. */
function cpuTimes(): [number, number] | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
    if (f[0] === undefined || f.length < 5 || f.some((x) => !Number.isFinite(x))) return undefined;
    const total = f.reduce((a, b) => a + b, 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle + iowait
    return [total - idle, total];
  } catch {
    return undefined;
  }
}

/** Samples /proc/stat `windowMs` apart (blocking this thread; meant for start-up); the load average elsewhere. */
export function nodeBusy(windowMs = 200): NodeBusy {
  const a = cpuTimes();
  if (a) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, windowMs);
    const b = cpuTimes();
    if (b && b[1] > a[1]) {
      const busyCores = ((b[0] - a[0]) / (b[1] - a[1])) * availableParallelism();
      return { busyCores, busySource: `${busyCores.toFixed(1)} cores busy over ${windowMs} ms` };
    }
  }
  const l = loadavg()[0] ?? Number.NaN;
  return { busyCores: l, busySource: `load average ${l.toFixed(1)}` };
}
