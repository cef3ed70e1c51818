// Runs the real command line (`node bin/moe-actors.mjs …`, or under `mpiexec.mpich -n N`) as a child process in
// its own process group, killed as a group when it outlives its deadline, so a hung command fails its test
// instead of hanging the suite.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = join(ROOT, 'bin', 'moe-actors.mjs');
export const PARITY = join(ROOT, 'test', 'fixtures', 'parity');
export const TRACE_FIXTURES = join(ROOT, 'test', 'fixtures', 'trace');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

export interface CliOptions {
  timeoutMs?: number;
  env?: Record<string, string | undefined>;
  /** Run under `mpiexec.mpich -n <mpi>`. */
  mpi?: number;
}

export function cli(args: readonly string[], o: CliOptions = {}): Promise<CliResult> {
  return o.mpi ? run('mpiexec.mpich', ['-n', String(o.mpi), process.execPath, BIN, ...args], o) : run(process.execPath, [BIN, ...args], o);
}

/** Any command, with the same deadline, environment and process-group kill as cli(). */
export function run(cmd: string, argv: readonly string[], o: Omit<CliOptions, 'mpi'> = {}): Promise<CliResult> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  // NO_COLOR: assertions read plain text whatever the environment says about colours.
  const env = { ...process.env, NO_COLOR: '1', FORCE_COLOR: undefined, UCX_MEM_EVENTS: 'no', ...o.env };
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0, timedOut });
    });
  });
}

/** The one-line failure description for an assertion message. */
export function show(r: CliResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}${r.timedOut ? ' after timeout' : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** Why MPI tests are skipped: only when the native build recorded that MPICH is missing. */
export function mpiUnavailable(): string | null {
  const marker = join(ROOT, 'native', 'mpi', 'UNAVAILABLE');
  return existsSync(marker) ? readFileSync(marker, 'utf8').trim() : null;
}

