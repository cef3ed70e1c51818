// One run per run folder. Two trainings writing the same folder would interleave metrics.jsonl and could commit a
// checkpoint whose rank files come from different runs (each file valid, the set meaningless). Default run names
// are `<config>-<date>-<time to the second>`, so two jobs started in the same second by a script share one.
//
// The lock is a file created with O_EXCL holding {pid, host, started}. A lock whose process is gone (a crash, a
// SIGKILL — the case resume exists for) is taken over; so is one written on another host, where this process
// cannot tell whether its writer still runs (a resumed cluster job lands on other nodes), with a warning.

import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from './job-config.ts';

export const LOCK_NAME = '.moe-actors.lock';

interface Holder {
  pid: number;
  host: string;
  started: string;
}

export class RunDirInUseError extends ConfigError {}

export interface RunLock {
  /** Removes the lock if it is still this process's. Idempotent. */
  release(): void;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readHolder(path: string): Holder | null {
  try {
    const h = JSON.parse(readFileSync(path, 'utf8')) as Partial<Holder>;
    return typeof h.pid === 'number' && typeof h.host === 'string'
      ? { pid: h.pid, host: h.host, started: String(h.started ?? '?') }
      : null;
  } catch {
    return null;
  }
}

/** Takes the run folder's lock, or throws RunDirInUseError naming the run that holds it. */
export function lockRunDir(runDir: string, log: (msg: string) => void): RunLock {
  const path = join(runDir, LOCK_NAME);
  const me: Holder = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new ConfigError(`cannot lock the run folder ${runDir}: ${(e as Error).message}`);
      const h = readHolder(path);
      if (h && h.host === me.host && h.pid !== me.pid && alive(h.pid)) {
        throw new RunDirInUseError(
          `the run folder ${runDir} is in use by another moe-actors run (pid ${h.pid} on this host, started ${h.started}); ` +
            'choose another --job.run_name, or wait for that run to end',
        );
      }
      if (h && h.host !== me.host)
        log(
          `run folder: taking over the lock of pid ${h.pid} on ${h.host} (started ${h.started}); make sure that run has ended`,
        );
      try {
        unlinkSync(path);
      } catch {
        // Another process took it over first: try again.
      }
      continue;
    }
    try {
      writeSync(fd, JSON.stringify(me) + '\n');
    } finally {
      closeSync(fd);
    }
    let released = false;
    return {
      release() {
        if (released) return;
        released = true;
        const h = readHolder(path);
        if (h && h.pid === me.pid && h.host === me.host && h.started === me.started) {
          try {
            unlinkSync(path);
          } catch {
            // Already gone.
          }
        }
      },
    };
  }
  throw new RunDirInUseError(
    `cannot lock the run folder ${runDir}: other processes keep taking its lock; choose another --job.run_name`,
  );
}
