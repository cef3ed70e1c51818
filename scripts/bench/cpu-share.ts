// How many of the node's cores a run got during its steady steps: the process's CPU seconds (every rank thread and
// the main thread) over the wall seconds between the end of step 1 and the end of the last step. On a node shared
// with other processes this is below the core count; a CPU-bound run would have taken wall × cores_used / cores on
// the node alone, which is what a projection for the node (configs/systems/local.toml) predicts.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface Sample {
  /** Epoch seconds (metrics.jsonl's `time`). */
  t: number;
  /** Process CPU seconds (user + system). */
  cpu: number;
  /** CPU seconds per thread id (Linux /proc/self/task; empty elsewhere). */
  threads: Map<number, number>;
}

/** Linux's USER_HZ: /proc's CPU times are in 1/100 s on every architecture Node runs on. */
const TICK_S = 0.01;

/** CPU seconds (user + system) of the process or thread whose /proc stat file this is (Linux). */
export function statCpuSeconds(path: string): number {
  const stat = readFileSync(path, 'utf8');
  // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_S;
}

function threadTimes(): Map<number, number> {
  const m = new Map<number, number>();
  let ids: string[];
  try {
    ids = readdirSync('/proc/self/task');
  } catch {
    return m;
  }
  for (const id of ids) {
    try {
      m.set(Number(id), statCpuSeconds(`/proc/self/task/${id}/stat`));
    } catch {
      // the thread ended between readdir and read
    }
  }
  return m;
}

const now = (): Sample => {
  const u = process.cpuUsage();
  return { t: Date.now() / 1000, cpu: (u.user + u.system) / 1e6, threads: threadTimes() };
};

/** Samples the process's CPU time every `everyMs` until stopped (the main thread is idle while ranks run). */
export function sampleCpu(everyMs = 50): { stop(): Sample[] } {
  const samples: Sample[] = [now()];
  const timer = setInterval(() => samples.push(now()), everyMs);
  return {
    stop() {
      clearInterval(timer);
      samples.push(now());
      return samples;
    },
  };
}

function cpuAt(s: Sample[], t: number): number {
  if (t <= s[0]!.t) return s[0]!.cpu;
  for (let i = 1; i < s.length; i++) {
    const a = s[i - 1]!;
    const b = s[i]!;
    if (t <= b.t) return b.t === a.t ? b.cpu : a.cpu + ((t - a.t) / (b.t - a.t)) * (b.cpu - a.cpu);
  }
  return s[s.length - 1]!.cpu;
}

export interface CoreShare {
  /** Process CPU seconds / wall seconds over the steps after the first. */
  cores: number;
  cpuSeconds: number;
  wallSeconds: number;
  /**
   * CPU seconds of the `ranks` busiest threads (the rank workers) over the same window, and of every other thread
   * (V8's garbage-collector and compiler threads, the main thread): the work beside the ranks' own.
   */
  rankCpuSeconds: number;
  otherCpuSeconds: number;
}

/** Per-thread CPU seconds between the last samples at or before t0 and t1 (whole ticks; threads alive in both). */
function threadDeltas(s: Sample[], t0: number, t1: number): number[] {
  const at = (t: number) => {
    let best = s[0]!;
    for (const x of s) if (x.t <= t) best = x;
    return best;
  };
  const a = at(t0).threads;
  const b = at(t1).threads;
  return [...b].map(([id, v]) => v - (a.get(id) ?? 0));
}

/** Cores the run in `runDir` used over its steps after the first (ends of steps from its metrics.jsonl). */
export function coresDuringSteps(runDir: string, samples: Sample[], ranks: number): CoreShare {
  const ends = new Map<number, number>();
  for (const line of readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const r = JSON.parse(line) as { step: number; time: number };
    ends.set(r.step, Math.max(ends.get(r.step) ?? 0, r.time));
  }
  const steps = [...ends.keys()].sort((a, b) => a - b);
  if (steps.length < 2) throw new Error(`${runDir}: need at least 2 logged steps to measure the cores a run got`);
  const t0 = ends.get(steps[0]!)!;
  const t1 = ends.get(steps[steps.length - 1]!)!;
  const cpuSeconds = cpuAt(samples, t1) - cpuAt(samples, t0);
  const wallSeconds = t1 - t0;
  const d = threadDeltas(samples, t0, t1).sort((x, y) => y - x);
  const rankCpuSeconds = d.slice(0, ranks).reduce((x, y) => x + y, 0);
  const otherCpuSeconds = d.slice(ranks).reduce((x, y) => x + y, 0);
  return { cores: cpuSeconds / wallSeconds, cpuSeconds, wallSeconds, rankCpuSeconds, otherCpuSeconds };
}
