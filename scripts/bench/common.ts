// Shared plumbing of `npm run bench:<name>`: machine facts, medians, a readable table, and the JSON file
// outputs/bench/<name>.json in the shape ../shared/design/BENCHMARKS.md prescribes.
import { cpus, loadavg } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The optimizer, LR schedule and clipping every bench training runs with (bench:model, its profile, bench:ep). */
export const BENCH_OPTIMIZER = {
  adamw: { lr: 4e-3, beta1: 0.9, beta2: 0.95, eps: 1e-15, weight_decay: 0.1 },
  schedule: { totalSteps: 100_000, warmupSteps: 2, decayRatio: 0.8, decayType: 'linear', minLrFactor: 0.1 },
  maxNorm: 1,
} as const;

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  target?: number;
  note?: string;
}

export interface BenchReport {
  bench: string;
  when: string;
  machine: {
    cpus: number;
    cpu_model: string;
    node: string;
    blas: string;
    env: Record<string, string | null>;
  };
  config: Record<string, unknown>;
  results: BenchResult[];
  notes?: string[];
}

const ENV_KEYS = [
  'OPENBLAS_CORETYPE',
  'OPENBLAS_THREAD_TIMEOUT',
  'OPENBLAS_L2_SIZE',
  'OPENBLAS_NUM_THREADS',
  'OMP_WAIT_POLICY',
  'OMP_NUM_THREADS',
  'UCX_MEM_EVENTS',
];

export function machineInfo(blas: string, env: NodeJS.ProcessEnv = process.env): BenchReport['machine'] {
  const c = cpus();
  return {
    cpus: c.length,
    cpu_model: c[0]?.model ?? 'unknown',
    node: process.version,
    blas,
    env: Object.fromEntries(ENV_KEYS.map((k) => [k, env[k] ?? null])),
  };
}

/** The 1/5/15-minute load averages (as `uptime` prints them), for saying how loaded the machine was. */
export function loadNote(when: string): string {
  const [a, b, c] = loadavg();
  return `load average ${when}: ${a!.toFixed(2)}, ${b!.toFixed(2)}, ${c!.toFixed(2)} (${cpus().length} CPUs)`;
}

/** min–max of a sample, formatted with `digits` decimals. */
export function range(xs: readonly number[], digits = 1): string {
  return `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Runs fn `warmup` times untimed, then `reps` times; returns the per-run milliseconds. */
export function timeRuns(fn: () => void, reps: number, warmup = 1): number[] {
  for (let i = 0; i < warmup; i++) fn();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    out.push(performance.now() - t0);
  }
  return out;
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1e7)) return v.toExponential(3);
  return v.toLocaleString('en-US', { maximumFractionDigits: a < 10 ? 3 : 1 });
}

export function printTable(report: BenchReport): void {
  const rows = report.results.map((r) => [
    r.name,
    fmt(r.value),
    r.unit,
    r.target === undefined ? '' : fmt(r.target),
    r.note ?? '',
  ]);
  const head = ['result', 'value', 'unit', 'target', 'note'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 1 || i === 3 ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join('  ');
  console.log(`\n${report.bench} — ${report.machine.cpu_model}, ${report.machine.cpus} CPUs, ${report.machine.blas}`);
  console.log(line(head));
  console.log(w.map((n) => '-'.repeat(n)).join('  '));
  for (const r of rows) console.log(line(r));
  for (const n of report.notes ?? []) console.log(`note: ${n}`);
}

export function writeReport(report: BenchReport): string {
  const file = join(ROOT, 'outputs', 'bench', `${report.bench}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  printTable(report);
  console.log(`\nwrote ${file}`);
  return file;
}
