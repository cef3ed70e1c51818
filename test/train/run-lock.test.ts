// One run per run folder (src/train/run-lock.ts): a live holder on this host refuses the folder, a dead one (a
// crash) or one from another host is taken over, and release removes only this process's lock.
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOCK_NAME, lockRunDir, RunDirInUseError } from '../../src/train/run-lock.ts';

const root = mkdtempSync(join(tmpdir(), 'moe-lock-'));
let n = 0;
const dir = () => {
  const d = join(root, `run${n++}`);
  mkdirSync(d);
  return d;
};
const holder = (d: string, h: object) => writeFileSync(join(d, LOCK_NAME), JSON.stringify(h));

describe('run folder lock', () => {
  it('locks, refuses a second holder while held, and releases', () => {
    const d = dir();
    const lock = lockRunDir(d, () => {});
    expect(JSON.parse(readFileSync(join(d, LOCK_NAME), 'utf8'))).toMatchObject({ pid: process.pid, host: hostname() });
    lock.release();
    lock.release();
    expect(existsSync(join(d, LOCK_NAME))).toBe(false);
  });

  it('a live process on this host holds it: refused, naming the pid and the fix', async () => {
    const d = dir();
    const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)'], { stdio: 'ignore' });
    try {
      holder(d, { pid: other.pid, host: hostname(), started: '2026-11-26T10:00:00Z' });
      const t = () => lockRunDir(d, () => {});
      expect(t).toThrow(RunDirInUseError);
      expect(t).toThrow(
        `the run folder ${d} is in use by another moe-actors run (pid ${other.pid} on this host, started 2026-11-26T10:00:00Z); choose another --job.run_name, or wait for that run to end`,
      );
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('a dead holder (a crashed run) is taken over silently; one from another host with a warning; garbage too', () => {
    const dead = dir();
    const gone = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    const pid = gone.pid!;
    return new Promise<void>((resolve) => gone.on('exit', () => resolve())).then(() => {
      holder(dead, { pid, host: hostname(), started: 'x' });
      const logs: string[] = [];
      lockRunDir(dead, (m) => logs.push(m)).release();
      expect(logs).toEqual([]);

      const far = dir();
      holder(far, { pid: 1, host: 'some-other-node', started: '2026-11-26T10:00:00Z' });
      lockRunDir(far, (m) => logs.push(m)).release();
      expect(logs).toEqual([
        'run folder: taking over the lock of pid 1 on some-other-node (started 2026-11-26T10:00:00Z); make sure that run has ended',
      ]);

      const junk = dir();
      writeFileSync(join(junk, LOCK_NAME), 'not json');
      const l = lockRunDir(junk, () => {});
      expect(JSON.parse(readFileSync(join(junk, LOCK_NAME), 'utf8')).pid).toBe(process.pid);
      l.release();
    });
  });

  it('release leaves a lock that another process has taken over since', () => {
    const d = dir();
    const lock = lockRunDir(d, () => {});
    holder(d, { pid: 4242, host: 'elsewhere', started: 'later' });
    lock.release();
    expect(JSON.parse(readFileSync(join(d, LOCK_NAME), 'utf8')).host).toBe('elsewhere');
  });
});
