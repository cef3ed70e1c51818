// Confinement of a checkpoint's files. A manifest is data from disk, possibly edited, corrupted or crafted: every
// name it lists must be a plain file name inside its step folder (no "..", no absolute path, no separator), the
// file there must be a regular file (not a symlink that points elsewhere, not a device or FIFO whose read never
// ends), and nothing is read beyond the size the manifest — checked for range — says. The manifest's own numbers
// (step, world size, mesh degrees, file ranks and sizes) are checked for type and range before anything uses them.

import { constants, fstatSync, lstatSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError, type Manifest } from './format.ts';

/** A manifest lists a few files per rank; 16 MiB holds ~100k entries. A larger "manifest" is not one. */
export const MAX_MANIFEST_BYTES = 16 << 20;
/** JSON extras of a rank (RNG, data position, scheduler): kilobytes; 256 MiB is far past any real one. */
export const MAX_EXTRAS_BYTES = 256 << 20;
/** Ranks a checkpoint may name (a manifest claiming more is corrupted). */
export const MAX_WORLD_SIZE = 1 << 20;

const FILE_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const SHA256_RE = /^[0-9a-f]{64}$/;

/** Why `name` is not a plain file name inside the step folder, or null. */
export function fileNameProblem(name: unknown): string | null {
  if (typeof name !== 'string' || name === '') return 'is not a file name';
  if (name.includes('/') || name.includes('\\') || name.includes('\0'))
    return 'is a path, not a file name inside the step folder';
  if (name === '.' || name === '..' || !FILE_NAME_RE.test(name))
    return 'is not a plain file name (letters, digits, ".", "_", "-")';
  if (name.length > 255) return 'is longer than a file name can be';
  return null;
}

/**
 * `dir/name` after checking that the name stays in `dir` and that what is there is a regular file (lstat: a
 * symlink is refused, wherever it points). Returns the path and its size. Throws CheckpointError.
 */
export function confinedFile(dir: string, name: string, listedIn: string): { path: string; size: number } {
  const why = fileNameProblem(name);
  if (why)
    throw new CheckpointError(
      `${listedIn} lists ${JSON.stringify(name)}, which ${why}; a checkpoint's files live in its step folder ${dir} — this manifest is corrupted or was edited`,
      join(dir, String(name)),
    );
  const path = join(dir, name);
  let st;
  try {
    st = lstatSync(path);
  } catch {
    throw new CheckpointError(`${path} is missing (listed in ${listedIn})`, path);
  }
  if (st.isSymbolicLink())
    throw new CheckpointError(
      `${path} is a symbolic link; a checkpoint's files must be regular files inside its step folder (copy the file in, do not link it)`,
      path,
    );
  if (!st.isFile())
    throw new CheckpointError(
      `${path} is not a regular file (a folder, device or pipe); a checkpoint holds only regular files`,
      path,
    );
  return { path, size: st.size };
}

/**
 * Opens a confined file for reading without following a symlink swapped in after the check, and checks again
 * that the descriptor is a regular file. The caller closes it.
 */
export function openConfined(path: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(
      code === 'ELOOP'
        ? `${path} is a symbolic link; a checkpoint's files must be regular files inside its step folder`
        : `${path} cannot be opened: ${(e as Error).message}`,
      path,
    );
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    throw new CheckpointError(`${path} is not a regular file; a checkpoint holds only regular files`, path);
  }
  return { fd, size: st.size };
}

const isCount = (v: unknown, min: number, max: number): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;

/** Checks every field of a parsed manifest for type and range; throws CheckpointError naming the first bad one. */
export function checkManifestFields(m: Manifest, p: string): void {
  const bad = (what: string) => {
    throw new CheckpointError(
      `${p} is corrupted: ${what}; this checkpoint cannot be used — load an older one (--checkpoint.load_step) or delete this step folder`,
      p,
    );
  };
  if (!isCount(m.step, 0, Number.MAX_SAFE_INTEGER)) bad(`step ${JSON.stringify(m.step)} is not an integer ≥ 0`);
  if (!isCount(m.worldSize, 1, MAX_WORLD_SIZE))
    bad(`worldSize ${JSON.stringify(m.worldSize)} is not an integer in [1, ${MAX_WORLD_SIZE}]`);
  if (typeof m.configHash !== 'string') bad('configHash is not a string');
  if (m.mesh === null || typeof m.mesh !== 'object' || Array.isArray(m.mesh)) bad('mesh is not an object of degrees');
  for (const [k, d] of Object.entries(m.mesh))
    if (!isCount(d, 1, MAX_WORLD_SIZE)) bad(`mesh degree ${k} = ${JSON.stringify(d)} is not an integer ≥ 1`);
  const dense = ['dp_replicate', 'dp_shard', 'tp', 'pp', 'cp'];
  if (dense.every((k) => k in m.mesh)) {
    const prod = dense.reduce((a, k) => a * m.mesh[k]!, 1);
    if (prod !== m.worldSize)
      bad(`mesh degrees dp_replicate·dp_shard·tp·pp·cp = ${prod}, but worldSize is ${m.worldSize}`);
    const ep = m.mesh.ep;
    if (ep !== undefined && (m.mesh.dp_shard! * m.mesh.cp!) % ep !== 0)
      bad(`mesh degree ep = ${ep} does not divide dp_shard·cp = ${m.mesh.dp_shard! * m.mesh.cp!}`);
  }
  if (!Array.isArray(m.files)) bad('files is not a list');
  const seen = new Set<string>();
  for (const [i, f] of m.files.entries()) {
    if (f === null || typeof f !== 'object') bad(`files[${i}] is not an entry`);
    const why = fileNameProblem(f.name);
    if (why) bad(`files[${i}].name ${JSON.stringify(f.name)} ${why}`);
    if (seen.has(f.name)) bad(`files[${i}]: ${f.name} is listed twice`);
    seen.add(f.name);
    if (!isCount(f.rank, 0, m.worldSize - 1))
      bad(`files[${i}] (${f.name}): rank ${JSON.stringify(f.rank)} is not a rank of a world of ${m.worldSize}`);
    if (!isCount(f.bytes, 0, Number.MAX_SAFE_INTEGER))
      bad(`files[${i}] (${f.name}): bytes ${JSON.stringify(f.bytes)} is not a size`);
    if (typeof f.sha256 !== 'string' || !SHA256_RE.test(f.sha256))
      bad(`files[${i}] (${f.name}): sha256 is not 64 hex digits`);
  }
}
