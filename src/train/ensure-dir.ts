// Creating the folders a job writes to. Node 20's mkdirSync(…, { recursive: true }) never returns on some
// filesystems: under /proc it gets ENOENT for the child, finds the parent present, and retries forever (a
// `--job.dump_folder /proc/x` train spun at 100 % CPU). One mkdir per missing component cannot loop, and a
// failure names the folder that could not be made.

import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** Makes `path` and its missing parents; `what` names the setting in errors ("[job] dump_folder"). */
export function ensureDir(path: string, what: string): void {
  const missing: string[] = [];
  let p = resolve(path);
  while (!existsSync(p)) {
    missing.push(p);
    const up = dirname(p);
    if (up === p) break;
    p = up;
  }
  if (missing.length === 0 && !statSync(p).isDirectory()) throw new Error(`${what}: ${p} exists and is not a folder`);
  for (const d of missing.reverse()) {
    if (makeFolder(d, what)) continue;
    let isDir = false;
    try {
      isDir = statSync(d).isDirectory();
    } catch {
      // A dangling symlink: EEXIST, yet nothing to stat.
    }
    if (!isDir) throw new Error(cannotCreate(what, d, 'EEXIST'));
  }
}

/** Makes one folder: true if made, false if something of that name exists; any other failure names it. */
export function makeFolder(dir: string, what: string): boolean {
  try {
    mkdirSync(dir);
    return true;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EEXIST') return false;
    throw new Error(cannotCreate(what, dir, err.code ?? err.message));
  }
}

function cannotCreate(what: string, dir: string, why: string): string {
  return `${what}: cannot create the folder ${dir} (${why}); choose a writable location`;
}
