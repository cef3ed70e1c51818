// Starting an MPI job from Node (tests, benchmarks, the CLI) and reading it back as a LaunchResult:
// `mpiexec.mpich -n N node src/comm/mpi/run.mjs …` in its own process group, with UCX_MEM_EVENTS=no exported
// (toolchain.md: UCX's memory hooks crash V8 a few percent of the time under MPICH ch4:ucx), stopped with SIGTERM
// (forwarded by Hydra), then SIGKILL, if the job outlives its deadline. Ranks print their outcomes as tagged JSON
// lines; ranks that never did (killed in the teardown that MPI_Abort triggers) are reported as such, and the
// diagnosis names the root cause and runs `inspect` over the dumps the ranks reported.
//
// Hydra starts its proxy and every rank in a session of their own (setsid), so a signal to mpiexec's process group
// does not reach them, and a rank may still be exiting when mpiexec is gone. Every process of a job carries a
// token in its environment; the job is over only when no process with it is left (Linux /proc), the stragglers
// getting SIGKILL after their grace period.

import { randomBytes } from 'node:crypto';

import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dumpFileName, readDump } from '../flight-dump-io.ts';
import type { FlightDump } from '../flight-recorder.ts';
import { diagnose } from '../inspect.ts';
import type { LaunchResult, RankEntry, RankOutcome, WorldOptions } from '../launch.ts';
import { rootCause } from '../threads/diagnose.ts';
import { OUTCOME_TAG } from './world.ts';

export const MPIEXEC = process.env.MOE_ACTORS_MPIEXEC ?? 'mpiexec.mpich';
const RUN = fileURLToPath(new URL('./run.mjs', import.meta.url));
const RANK_SH = fileURLToPath(new URL('../../../scripts/mpi-rank.sh', import.meta.url));
/** Between SIGTERM (ranks dump and report) and SIGKILL at a job's deadline. */
const TERM_GRACE_MS = 1500;

export interface SpawnMpiOptions {
  n: number;
  entry: RankEntry;
  args?: unknown;
  world?: Pick<WorldOptions, 'timeoutMs' | 'profile' | 'dumpDir' | 'flightEntries'>;
  /** 'ccl': the same job with oneCCL carrying the collectives (default mpi). */
  transport?: 'mpi' | 'ccl';
  /** Stop the whole job (SIGTERM, then SIGKILL after a grace period) after this long. */
  jobTimeoutMs: number;
  env?: Record<string, string | undefined>;
  /** Forward the job's stderr to this process's stderr as it comes. */
  echo?: boolean;
}

export interface SpawnMpiResult<R> extends LaunchResult<R> {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The job hit jobTimeoutMs and was killed. */
  killed: boolean;
  ms: number;
  stdout: string;
  stderr: string;
}

/** The environment every rank of a job needs (also exported by scripts that call mpiexec themselves). */
export function mpiEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return { ...process.env, UCX_MEM_EVENTS: 'no', ...extra };
}

export function mpiexecArgs(o: Pick<SpawnMpiOptions, 'n' | 'entry' | 'args' | 'world' | 'transport'>): string[] {
  // Each rank runs under scripts/mpi-rank.sh, so that a rank killed by a signal does not make Hydra kill the
  // survivors before they report (see that script); it lingers past the collective timeout, by which every
  // survivor has reported and aborted the job.
  const linger = String(Math.ceil((o.world?.timeoutMs ?? 30_000) / 1000) + 5);
  const a = [
    '-n',
    String(o.n),
    'sh',
    RANK_SH,
    linger,
    process.execPath,
    RUN,
    '--module',
    o.entry.module,
    '--args',
    JSON.stringify(o.args ?? null),
  ];
  if (o.transport === 'ccl') a.push('--transport', 'ccl');
  if (o.entry.exportName) a.push('--export', o.entry.exportName);
  if (o.world?.timeoutMs !== undefined) a.push('--timeout', String(o.world.timeoutMs));
  if (o.world?.profile) a.push('--profile', o.world.profile);
  if (o.world?.dumpDir) a.push('--dump-dir', o.world.dumpDir);
  if (o.world?.flightEntries !== undefined) a.push('--flight-entries', String(o.world.flightEntries));
  return a;
}

/** Tagged outcome lines of a job's stdout, by rank (the first line per rank wins). */
export function parseOutcomes<R>(stdout: string): Map<number, RankOutcome<R>> {
  const out = new Map<number, RankOutcome<R>>();
  for (const line of stdout.split('\n')) {
    const i = line.indexOf(OUTCOME_TAG);
    if (i < 0) continue;
    try {
      const o = JSON.parse(line.slice(i + OUTCOME_TAG.length)) as RankOutcome<R>;
      if (!out.has(o.rank)) out.set(o.rank, o);
    } catch {
      // A line cut by the teardown; the rank then counts as not reported.
    }
  }
  return out;
}

/** Runs an MPI job to completion (or its deadline) and returns every rank's outcome. */
export function spawnMpi<R>(o: SpawnMpiOptions): Promise<SpawnMpiResult<R>> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const token = `${process.pid}-${randomBytes(6).toString('hex')}`;
    const child = spawn(MPIEXEC, mpiexecArgs(o), {
      env: mpiEnv({ ...o.env, [JOB_TOKEN]: token }),
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let killed = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
      if (o.echo) process.stderr.write(s);
    });
    // SIGTERM first, which Hydra forwards: each rank writes its flight dump and prints where it stood (world.ts);
    // SIGKILL for whatever is left of mpiexec's group, and (on close) for the job's processes outside it.
    const signalGroup = (sig: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        child.kill(sig);
      }
    };
    let hardKill: ReturnType<typeof setTimeout> | undefined;
    let hardKillAt = 0;
    const timer = setTimeout(() => {
      killed = true;
      signalGroup('SIGTERM');
      hardKillAt = performance.now() + TERM_GRACE_MS;
      hardKill = setTimeout(() => signalGroup('SIGKILL'), TERM_GRACE_MS);
    }, o.jobTimeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(
        new Error(
          `could not start ${MPIEXEC}: ${e.message}. Fix: install MPICH (apt-get install mpich) or set MOE_ACTORS_MPIEXEC.`,
        ),
      );
    });
    child.on('close', async (exitCode, signal) => {
      clearTimeout(timer);
      // Ranks told to stop keep their grace period to write their dumps; after mpiexec's own exit, a straggler
      // gets a moment to finish its exit.
      await reapJob(token, killed ? hardKillAt : performance.now() + STRAGGLER_GRACE_MS);
      clearTimeout(hardKill);
      const reported = parseOutcomes<R>(stdout);
      const signalled = new Map(
        [...stderr.matchAll(/moe-actors: rank (\d+) was killed by signal (\d+)/g)].map((m) => [
          Number(m[1]),
          Number(m[2]),
        ]),
      );
      const outcomes: RankOutcome<R>[] = [];
      for (let r = 0; r < o.n; r++) {
        outcomes.push(
          reported.get(r) ??
            fromDumpFile(o.world?.dumpDir, r) ?? {
              rank: r,
              ok: false,
              error: signalled.has(r)
                ? `no outcome: the rank's process was killed by signal ${signalled.get(r)} (kill -9, the OOM killer, or a crash)`
                : killed
                  ? `no outcome: the job was killed after ${o.jobTimeoutMs} ms (jobTimeoutMs) while this rank was still running`
                  : 'no outcome: the rank was killed in the job teardown before it reported (busy in JavaScript, crashed, or killed by a signal)',
            },
        );
      }
      const res: SpawnMpiResult<R> = { outcomes, exitCode, signal, killed, ms: performance.now() - t0, stdout, stderr };
      if (outcomes.some((x) => !x.ok) || exitCode !== 0)
        res.diagnosis = diagnoseJob(o.n, outcomes, exitCode, signal, killed);
      resolve(res);
    });
  });
}

/** The environment variable that marks every process of one spawnMpi job. */
const JOB_TOKEN = 'MOE_ACTORS_MPI_JOB';
/** How long a process of a job may outlive mpiexec before it gets SIGKILL. */
const STRAGGLER_GRACE_MS = 500;

/** Live processes whose environment carries this job's token (none where /proc is not readable). */
function jobProcesses(token: string): number[] {
  const needle = `${JOB_TOKEN}=${token}\0`;
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    try {
      // A zombie's environ reads empty: it has exited and is not counted.
      if (readFileSync(`/proc/${n}/environ`, 'latin1').includes(needle)) out.push(Number(n));
    } catch {
      /* gone meanwhile, or not ours to read */
    }
  }
  return out;
}

/** Waits until no process of the job is left; at `until` (performance.now() time) the rest get SIGKILL. */
async function reapJob(token: string, until: number): Promise<void> {
  let killedAt: number | null = null;
  for (;;) {
    const left = jobProcesses(token);
    if (left.length === 0) return;
    const now = performance.now();
    if (killedAt === null && now >= until) {
      killedAt = now;
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    } else if (killedAt !== null && now - killedAt > 2000) {
      return; // SIGKILL was sent; a process stuck in the kernel is beyond our reach
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A rank's line can be lost when the teardown kills Hydra's output forwarding first; its dump file, written
 * synchronously before anything else, still says why it stopped.
 */
function fromDumpFile(dir: string | undefined, rank: number): RankOutcome<never> | null {
  const file = dir ? join(dir, dumpFileName(rank)) : null;
  if (!file || !existsSync(file)) return null;
  try {
    const dump = readDump(file);
    return {
      rank,
      ok: false,
      error: `${dump.reason} (from its flight dump; its outcome line was lost in the teardown)`,
      dump,
    };
  } catch {
    return null;
  }
}

function diagnoseJob(
  n: number,
  outcomes: readonly RankOutcome<unknown>[],
  exitCode: number | null,
  signal: string | null,
  killed: boolean,
): string {
  const failures = outcomes.filter(
    (x): x is Extract<RankOutcome<unknown>, { ok: false }> => !x.ok && !x.error.startsWith('no outcome'),
  );
  const lines: string[] = [];
  const root = rootCause(failures.map((f) => ({ rank: f.rank, what: f.error })));
  if (killed)
    lines.push(
      'the job outlived its deadline (jobTimeoutMs) and was stopped with SIGTERM, then SIGKILL; each rank that answered says where it stood',
    );
  else if (root) lines.push(`first failure: rank ${root.rank}: ${root.what.split('\n', 1)[0]}`);
  else lines.push(`mpiexec exited with ${signal ?? `code ${exitCode}`} and no rank reported a failure`);
  const dumps = outcomes.flatMap((x) => (!x.ok && x.dump ? [x.dump as FlightDump] : []));
  const notes = new Map(
    outcomes.filter((x) => !x.ok).map((x) => [x.rank, (x as { error: string }).error.split('\n', 1)[0]!]),
  );
  if (dumps.length > 0) lines.push(diagnose(dumps, { notes, worldSize: n }).text);
  else for (const [r, note] of notes) lines.push(`rank ${r}: ${note}`);
  return lines.join('\n');
}
