// Shared by the runtime tests (test/runtime/*.test.ts): the tiny job config, child processes in their own process
// group (killed as a group on timeout, so no test leaves ranks behind), metrics.jsonl / console-line parsing with
// torchtitan's fields, run-folder checks and checkpoint comparisons.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, vi } from 'vitest';
import { listCheckpoints, readCheckpoint } from '../../src/train/checkpoint/index.ts';
import { sha256File } from '../../src/train/checkpoint/atomic.ts';
import { validateChromeTrace } from '../../src/trace/chrome-validate.ts';

export const REPO = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
export const CLI = join(REPO, 'bin', 'moe-actors.mjs');
/** configs/debug_ep4.toml with a tiny model (see the file). */
export const TINY = join(REPO, 'test', 'runtime', 'fixtures', 'tiny_ep4.toml');
/** Where MPICH is missing the build leaves this marker (scripts/build-native.mjs) with the reason. */
export const MPI_MARKER = join(REPO, 'native', 'mpi', 'UNAVAILABLE');
export const MPI_SKIP = existsSync(MPI_MARKER)
  ? `mpi tests skipped: native/mpi/UNAVAILABLE says the MPI binding was not built: ${readFileSync(MPI_MARKER, 'utf8').trim()}`
  : null;

export function tmpRoot(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `moe-runtime-${prefix}-`));
}

export interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** The deadline passed and the process group was killed. */
  timedOut: boolean;
}

export interface ChildOptions {
  env?: Record<string, string | undefined>;
  timeoutMs: number;
  cwd?: string;
  /** Called on every chunk of stdout with all stdout so far; `kill` signals the whole process group (SIGKILL by default). */
  onStdout?: (all: string, kill: (signal?: NodeJS.Signals) => void) => void;
  /** Called every `pollMs` while the process runs (e.g. to watch files); same `kill`. */
  poll?: (kill: (signal?: NodeJS.Signals) => void) => void;
  pollMs?: number;
}

/** Process groups of children still running: killed if this process exits first (a test that timed out). */
const liveGroups = new Set<number>();
process.once('exit', () => {
  for (const pid of liveGroups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** Runs a command in its own process group; kills the group on the deadline; never rejects for a non-zero exit. */
export function runChild(cmd: string, args: readonly string[], o: ChildOptions): Promise<ChildRun> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: o.cwd ?? REPO,
      env: { ...process.env, ...o.env },
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid) liveGroups.add(child.pid);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let ended = false;
    const kill = (signal: NodeJS.Signals = 'SIGKILL') => {
      if (ended) return;
      try {
        process.kill(-child.pid!, signal);
      } catch {
        child.kill(signal);
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill('SIGKILL');
    }, o.timeoutMs);
    const poller = o.poll ? setInterval(() => o.poll!(kill), o.pollMs ?? 1) : undefined;
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      o.onStdout?.(stdout, kill);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', (e) => {
      clearTimeout(timer);
      clearInterval(poller);
      reject(e);
    });
    child.on('close', (code, signal) => {
      ended = true;
      liveGroups.delete(child.pid!);
      clearTimeout(timer);
      clearInterval(poller);
      // The group may hold more processes than the one we started (mpiexec's proxies and ranks).
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0, timedOut });
    });
  });
}

/** `node bin/moe-actors.mjs train …` as a child process. */
export function runTrainCli(
  args: readonly string[],
  o: Omit<ChildOptions, 'env'> & { env?: Record<string, string | undefined> },
): Promise<ChildRun> {
  return runChild(process.execPath, [CLI, 'train', ...args], o);
}

/** `mpiexec.mpich -n N node bin/moe-actors.mjs train …` with UCX_MEM_EVENTS=no. */
export function runTrainMpi(n: number, args: readonly string[], o: Omit<ChildOptions, 'env'>): Promise<ChildRun> {
  return runChild('mpiexec.mpich', ['-n', String(n), process.execPath, CLI, 'train', ...args], {
    ...o,
    env: { UCX_MEM_EVENTS: 'no' },
  });
}

export function describeChild(r: ChildRun): string {
  return `exit ${r.code ?? r.signal}${r.timedOut ? ' (killed at its deadline)' : ''} after ${r.ms.toFixed(0)} ms\n--- stdout ---\n${r.stdout.slice(-4000)}\n--- stderr ---\n${r.stderr.slice(-4000)}`;
}

// ---- metrics ----

export type MetricsRecord = Record<string, number | string | boolean | null>;

/** Every line of a JSON Lines file, parsed; a line that is not a JSON object fails with its number. */
export function readJsonl(path: string): MetricsRecord[] {
  const text = readFileSync(path, 'utf8');
  expect(text.endsWith('\n'), `${path} ends with a newline (no torn last line)`).toBe(true);
  return text
    .split('\n')
    .slice(0, -1)
    .map((line, i) => {
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (e) {
        throw new Error(`${path}:${i + 1}: not JSON (${(e as Error).message}): ${line.slice(0, 200)}`);
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v))
        throw new Error(`${path}:${i + 1}: not a JSON object`);
      return v as MetricsRecord;
    });
}

/** torchtitan's metric names (components/metrics.py) that every record must carry, with numeric values. */
export const TORCHTITAN_KEYS = [
  'loss_metrics/global_avg_loss',
  'loss_metrics/global_max_loss',
  'grad_norm',
  'lr',
  'throughput(tps)',
  'tflops',
  'mfu(%)',
  'time_metrics/end_to_end(s)',
  'time_metrics/data_loading(s)',
  'time_metrics/data_loading(%)',
  'memory/max_active(GiB)',
  'memory/max_active(%)',
  'memory/rss(GiB)',
] as const;

/**
 * Checks every record of a run's metrics.jsonl: torchtitan's keys with finite numbers, one record per (rank, step)
 * for the given steps, the same global loss on every rank. Returns the global loss per step (the last record of
 * each step wins, so a resumed run's re-done steps replace the killed run's).
 */
export function checkMetrics(
  runDir: string,
  ranks: number,
  steps: readonly number[],
): Map<number, { loss: number; gradNorm: number; lr: number }> {
  const recs = readJsonl(join(runDir, 'metrics.jsonl'));
  const seen = new Map<string, MetricsRecord>();
  for (const r of recs) {
    expect(
      Number.isInteger(r.step) && Number.isInteger(r.rank),
      `step/rank of ${JSON.stringify(r).slice(0, 120)}`,
    ).toBe(true);
    for (const k of TORCHTITAN_KEYS) {
      expect(typeof r[k], `${k} in step ${r.step} rank ${r.rank}`).toBe('number');
      expect(Number.isFinite(r[k] as number), `${k} finite`).toBe(true);
    }
    expect(r['loss_metrics/global_max_loss'] as number).toBeGreaterThanOrEqual(
      (r['loss_metrics/global_avg_loss'] as number) * 0.5,
    );
    expect(r['throughput(tps)'] as number).toBeGreaterThan(0);
    expect(
      Object.keys(r).some((k) => /^comm\/.+\(bytes\)$/.test(k)),
      'comm bytes per group',
    ).toBe(true);
    // The FSDP gradient reductions run on their own communicators; their bytes count too.
    if (ranks > 1)
      expect(r['comm/fsdp_reduce(bytes)'], `comm/fsdp_reduce(bytes) of step ${r.step} rank ${r.rank}`).toBeGreaterThan(
        0,
      );
    seen.set(`${r.rank}/${r.step}`, r);
  }
  const out = new Map<number, { loss: number; gradNorm: number; lr: number }>();
  for (const s of steps) {
    for (let rank = 0; rank < ranks; rank++) {
      const r = seen.get(`${rank}/${s}`);
      expect(r, `metrics.jsonl has step ${s} of rank ${rank}`).toBeDefined();
      const loss = r!['loss_metrics/global_avg_loss'] as number;
      if (rank === 0) out.set(s, { loss, gradNorm: r!.grad_norm as number, lr: r!.lr as number });
      // global_avg_loss is reduced over the loss mesh: every rank reports the same number.
      else expect(loss, `step ${s}: rank ${rank}'s global loss equals rank 0's`).toBe(out.get(s)!.loss);
    }
  }
  return out;
}

/** torchtitan's console line (spec §6), colours stripped. Groups: step, loss, grad_norm, GiB, %, tps, tflops, mfu. */
export const CONSOLE_LINE =
  /^step:\s{1,2}(\d+)\s{2}loss:\s+(-?\d+\.\d{5})\s{2}grad_norm:\s+(\d+\.\d{4})\s{2}memory:\s+(\d+\.\d{2})GiB\((\d+\.\d{2})%\)\s{2}tps:\s([\d,]+)\s{2}tflops:\s([\d,]+\.\d{2})\s{2}mfu:\s(\d+\.\d{2})%$/;

export function stripAnsi(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\u001b\[[0-9;]*m/g, '');
}

/** The console lines of `text` (every line starting with "step:" must be a well-formed one), by step. */
export function consoleSteps(text: string): Map<number, { loss: number; gradNorm: number }> {
  const out = new Map<number, { loss: number; gradNorm: number }>();
  for (const raw of stripAnsi(text).split('\n')) {
    const line = raw.trimEnd();
    if (!line.startsWith('step:')) continue;
    const m = CONSOLE_LINE.exec(line);
    expect(m, `console line is torchtitan's format: ${JSON.stringify(line)}`).not.toBeNull();
    out.set(Number(m![1]), { loss: Number(m![2]), gradNorm: Number(m![3]) });
  }
  return out;
}

/**
 * The loss fell: the last step is below the first, and the mean of the last third of the steps is below the mean
 * of the first third by at least `minDrop` (relative to the first loss). Robust to one noisy step.
 */
export function expectLossDecreases(losses: readonly number[], minDrop = 0.03): void {
  expect(losses.length).toBeGreaterThanOrEqual(3);
  for (const l of losses) expect(Number.isFinite(l)).toBe(true);
  const k = Math.max(1, Math.floor(losses.length / 3));
  const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const head = mean(losses.slice(0, k));
  const tail = mean(losses.slice(-k));
  expect(losses.at(-1)!, `losses ${losses.map((l) => l.toFixed(4)).join(' ')}`).toBeLessThan(losses[0]!);
  expect(
    head - tail,
    `losses ${losses.map((l) => l.toFixed(4)).join(' ')}: first-third mean − last-third mean`,
  ).toBeGreaterThan(minDrop * losses[0]!);
}

// ---- run folder and checkpoints ----

/** plan.txt, trace.json (a Chrome trace with events of every rank) and timeline.html are there and well formed. */
export function checkRunFolder(runDir: string, ranks: number, expect_: { dispatch?: string } = {}): void {
  const plan = readFileSync(join(runDir, 'plan.txt'), 'utf8');
  expect(plan).toMatch(/^mesh: world \d+ = dp_replicate/m);
  expect(plan).toMatch(/^EP dispatch: /m);
  expect(plan).toMatch(/^gradient reduction: /m);
  if (expect_.dispatch) expect(plan).toMatch(new RegExp(`^EP dispatch: ${expect_.dispatch} `, 'm'));
  const trace = JSON.parse(readFileSync(join(runDir, 'trace.json'), 'utf8')) as {
    traceEvents?: { pid?: unknown; ph?: string; name?: string; cat?: string; args?: Record<string, unknown> }[];
  };
  expect(Array.isArray(trace.traceEvents)).toBe(true);
  expect(validateChromeTrace(trace).errors, 'trace.json is a valid Chrome trace').toEqual([]);
  const pids = new Set(trace.traceEvents!.filter((e) => e.ph === 'X' || e.ph === 'B').map((e) => e.pid));
  expect(pids.size, 'trace.json has slices of every rank').toBeGreaterThanOrEqual(ranks);
  // Collectives of every kind of group, the gradient reductions (their own communicators) included.
  const groups = new Set(
    trace.traceEvents!.filter((e) => e.cat === 'collective').map((e) => `${e.args?.['Process Group Name']}:${e.name}`),
  );
  for (const g of ['fsdp:all_gather', 'fsdp_reduce:reduce_scatter', 'loss:all_reduce'])
    expect([...groups], `trace.json has ${g}`).toContain(g);
  const html = readFileSync(join(runDir, 'timeline.html'), 'utf8');
  expect(html).toMatch(/^<!doctype html>/i);
  expect(html).toContain('</html>');
  expect(html.length).toBeGreaterThan(10_000);
}

/**
 * The checkpoint folder holds exactly `steps`, each complete: a manifest listing every rank's safetensors + json
 * with size and SHA-256, each checked against the file on disk here (not only by the library's own verify).
 */
export function checkCheckpoints(folder: string, steps: readonly number[], worldSize: number): void {
  const l = listCheckpoints(folder);
  expect(l.partial, `partial checkpoints in ${folder}`).toEqual([]);
  expect(l.complete.map((c) => c.step)).toEqual([...steps]);
  for (const c of l.complete) {
    const m = c.manifest;
    expect(m.worldSize).toBe(worldSize);
    expect(m.step).toBe(c.step);
    const names = m.files.map((f) => f.name).sort();
    const want = Array.from({ length: worldSize }, (_, r) => [`rank${r}.json`, `rank${r}.safetensors`])
      .flat()
      .sort();
    expect(names).toEqual(want);
    for (const f of m.files) {
      expect(f.sha256).toMatch(/^[0-9a-f]{64}$/);
      const got = sha256File(join(c.dir, f.name));
      expect(got.bytes, `${f.name} size`).toBe(f.bytes);
      expect(got.sha256, `${f.name} checksum`).toBe(f.sha256);
    }
    // Nothing but the listed files and the manifest (no temp files or done-markers left by the commit).
    expect(readdirSync(c.dir).sort()).toEqual([...want, 'manifest.json'].sort());
  }
}

/** Every rank's tensors of a checkpoint, by "rank/name". */
export function checkpointTensors(dir: string): Map<string, Float32Array> {
  const ck = readCheckpoint(dir);
  const out = new Map<string, Float32Array>();
  for (const s of ck.shards) for (const [name, t] of s.tensors) out.set(`${s.rank}/${name}`, t.data as Float32Array);
  return out;
}

/** Index of the first element whose bits differ, or -1 (NaN-safe: compares the raw bits). */
export function firstBitDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return 0;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return i;
  return -1;
}

/**
 * The checkpoint at `got` holds the same bits as the one at `want`: the same tensor names (AdamW moments and expert
 * biases among them, so an empty or partial checkpoint cannot pass), every tensor bit for bit, and the same extras
 * per rank (data-loader position, scheduler index, optimizer steps).
 */
export function expectSameCheckpoint(want: string, got: string): void {
  const w = checkpointTensors(want);
  const g = checkpointTensors(got);
  expect([...g.keys()].sort()).toEqual([...w.keys()].sort());
  expect([...w.keys()].some((n) => n.includes('optim.exp_avg_sq.'))).toBe(true);
  expect([...w.keys()].some((n) => n.endsWith('.moe.expert_bias'))).toBe(true);
  for (const [n, t] of w) expect(firstBitDifference(g.get(n)!, t), `${got} ${n}: first differing element`).toBe(-1);
  expect(readCheckpoint(got).shards.map((s) => s.extras)).toEqual(readCheckpoint(want).shards.map((s) => s.extras));
}

/**
 * Runs `fn` with this process's stdout writes and console.log captured (not shown): the ranks' console lines
 * (process.stdout.write, also forwarded from worker threads) and rank 0's log messages (console.log).
 */
export async function captureOutput<T>(
  fn: () => Promise<T>,
  until?: (stdout: string) => boolean,
): Promise<{ value: T; stdout: string; logs: string[] }> {
  let stdout = '';
  const logs: string[] = [];
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation(((chunk: string | Uint8Array) => {
    stdout += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return true;
  }) as typeof process.stdout.write);
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void logs.push(a.join(' ')));
  try {
    const value = await fn();
    // Worker threads' stdout reaches this thread asynchronously: wait (up to 5 s) for what the caller expects.
    for (let t = 0; until && !until(stdout) && t < 100; t++) await new Promise((r) => setTimeout(r, 50));
    return { value, stdout, logs };
  } finally {
    spy.mockRestore();
    log.mockRestore();
  }
}
