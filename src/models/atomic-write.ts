// Crash-safe file writes: temp file in the same directory → write → fsync → rename. rename(2) within a directory
// is atomic, so a reader (or a resumed run after SIGKILL or power loss) sees the old file, the new file, or no
// file — never half of one. Shared by the safetensors writer and the checkpoint files.

import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** Temp files are `.<name>.<pid>.<random>.tmp` beside their target, so a cleanup can recognise leftovers. */
export const TEMP_SUFFIX = '.tmp';

function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`);
}

/** Writes all of `bytes` at the file's current position (writeSync may write less than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}

/**
 * Creates `path` through `write(fd)` on a fresh temp file, then fsync and rename over `path`. On any error the
 * temp file is closed and removed and the error is rethrown as it was: callers name it in their own terms.
 */
export function writeAtomically(path: string, write: (fd: number) => void): void {
  const tmp = tempNameFor(path);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx');
    write(fd);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    try {
      unlinkSync(tmp);
    } catch {
      /* may not exist */
    }
    throw e;
  }
}
