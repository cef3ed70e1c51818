// Runs the real command line (`node bin/moe-actors.mjs …`, or under `mpiexec.mpich -n N`) as a child process in
// its own process group, killed as a group when it outlives its deadline, so a hung command fails its test
// instead of hanging the suite.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runChild, type ChildRun } from '../runtime/helpers.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = join(ROOT, 'bin', 'moe-actors.mjs');
export const PARITY = join(ROOT, 'test', 'fixtures', 'parity');
export const TRACE_FIXTURES = join(ROOT, 'test', 'fixtures', 'trace');

export type CliResult = ChildRun;

export interface CliOptions {
  timeoutMs?: number;
  env?: Record<string, string | undefined>;
  /** Run under `mpiexec.mpich -n <mpi>`. */
  mpi?: number;
}

export function cli(args: readonly string[], o: CliOptions = {}): Promise<CliResult> {
  return o.mpi
    ? run('mpiexec.mpich', ['-n', String(o.mpi), process.execPath, BIN, ...args], o)
    : run(process.execPath, [BIN, ...args], o);
}

/** Any command, with the same deadline, environment and process-group kill as cli(). */
export function run(cmd: string, argv: readonly string[], o: Omit<CliOptions, 'mpi'> = {}): Promise<CliResult> {
  // NO_COLOR: assertions read plain text whatever the environment says about colours.
  const env = { NO_COLOR: '1', FORCE_COLOR: undefined, UCX_MEM_EVENTS: 'no', ...o.env };
  return runChild(cmd, argv, { cwd: ROOT, env, timeoutMs: o.timeoutMs ?? 30_000 });
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
