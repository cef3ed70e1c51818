// Comparing paths the user gave: two spellings of one file (a relative and an absolute path, a symlink, a hard
// link) are the same file, and an output written there would overwrite an input.

import { realpathSync, statSync } from 'node:fs';
import { dirname, basename, join, relative, resolve, isAbsolute } from 'node:path';

/** The path with symlinks resolved as far as it exists (a file not yet written resolves through its folder). */
export function canonical(p: string): string {
  const abs = resolve(p);
  try {
    return realpathSync(abs);
  } catch {
    const parent = dirname(abs);
    return parent === abs ? abs : join(canonical(parent), basename(abs));
  }
}

/** Whether a and b name the same file (same inode when both exist, else the same canonical path). */
export function samePath(a: string, b: string): boolean {
  try {
    const sa = statSync(a);
    const sb = statSync(b);
    if (sa.dev === sb.dev && sa.ino === sb.ino) return true;
  } catch {
    // One does not exist (yet): compare the paths.
  }
  return canonical(a) === canonical(b);
}

/** Whether `p` is `dir` or lies below it (after resolving symlinks). */
export function isInside(p: string, dir: string): boolean {
  const rel = relative(canonical(dir), canonical(p));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}
