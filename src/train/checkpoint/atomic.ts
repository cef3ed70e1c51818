// Checkpoint file primitives: crash-safe writes (models/atomic-write.ts: temp file → fsync → rename), durable
// renames, SHA-256 of bytes and files, quiet unlinks.

import { createHash } from 'node:crypto';
import { closeSync, constants, fsyncSync, openSync, readSync, unlinkSync } from 'node:fs';
import { writeAll, writeAtomically } from '../../models/atomic-write.ts';

export { TEMP_SUFFIX } from '../../models/atomic-write.ts';

export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  try {
    writeAtomically(path, (fd) => writeAll(fd, bytes));
  } catch (e) {
    throw new Error(`cannot write ${path}: ${(e as Error).message}`);
  }
}

/** Makes renames inside `dir` durable (Linux: fsync on the directory). */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    /* some filesystems refuse fsync on directories; the rename is still atomic */
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * SHA-256 of a file, read in 8 MiB chunks; at most `maxBytes` (+1, to notice a longer file) are read, and a path
 * that is a symlink is not followed (checkpoint files are regular files in their folder; see confine.ts).
 */
export function sha256File(path: string, maxBytes = Number.MAX_SAFE_INTEGER): { sha256: string; bytes: number } {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(8 << 20);
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  let total = 0;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, maxBytes + 1 - total), null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      total += n;
    }
  } finally {
    closeSync(fd);
  }
  return { sha256: h.digest('hex'), bytes: total };
}

export function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
