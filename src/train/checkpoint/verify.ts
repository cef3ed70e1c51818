// Is a step folder a complete checkpoint? Complete = manifest.json parses, is ours, names this step, and every
// file it lists exists with the listed size (verify: "size") and SHA-256 (verify: "checksum", the default).

import { closeSync, existsSync, lstatSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { sha256File } from './atomic.ts';
import { checkManifestFields, confinedFile, MAX_MANIFEST_BYTES, openConfined } from './confine.ts';
import { CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, MANIFEST_NAME, type Manifest } from './format.ts';

export type VerifyLevel = 'size' | 'checksum';

export function readManifest(dir: string, expectStep?: number): Manifest {
  const p = join(dir, MANIFEST_NAME);
  if (!existsSync(p) && !isLink(p)) {
    throw new CheckpointError(
      `${dir} is incomplete: no ${MANIFEST_NAME} (the write did not finish — crashed or still in progress)`,
      p,
    );
  }
  const { size } = confinedFile(dir, MANIFEST_NAME, dir);
  if (size > MAX_MANIFEST_BYTES)
    throw new CheckpointError(
      `${p} is ${size} bytes, more than a manifest can be (${MAX_MANIFEST_BYTES}); it is corrupted`,
      p,
    );
  let m: Manifest;
  try {
    m = JSON.parse(readBounded(p, MAX_MANIFEST_BYTES).toString('utf8')) as Manifest;
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new Error('not a JSON object');
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`${p} is not valid JSON (${(e as Error).message})`, p);
  }
  if (m.format !== CHECKPOINT_FORMAT)
    throw new CheckpointError(`${p} is not a moe-actors checkpoint manifest (format ${JSON.stringify(m.format)})`, p);
  if (m.version !== CHECKPOINT_VERSION) {
    throw new CheckpointError(
      `${p} has format version ${m.version}; this moe-actors reads version ${CHECKPOINT_VERSION}`,
      p,
    );
  }
  if (!Array.isArray(m.files) || !Number.isInteger(m.step))
    throw new CheckpointError(`${p} lacks its step or file list`, p);
  checkManifestFields(m, p);
  if (expectStep !== undefined && m.step !== expectStep)
    throw new CheckpointError(`${p} says step ${m.step} but its folder is step ${expectStep}`, p);
  return m;
}

/** Throws a CheckpointError naming the first bad file; returns the manifest when the checkpoint is complete. */
export function verifyCheckpoint(dir: string, level: VerifyLevel = 'checksum', expectStep?: number): Manifest {
  const m = readManifest(dir, expectStep);
  for (const f of m.files) verifyFile(dir, f, level);
  return m;
}

export function verifyFile(dir: string, f: Manifest['files'][number], level: VerifyLevel): void {
  const { path: p, size } = confinedFile(dir, f.name, join(dir, MANIFEST_NAME));
  if (size !== f.bytes) throw new CheckpointError(`${p} is corrupted: ${size} bytes, the manifest lists ${f.bytes}`, p);
  if (level === 'checksum') {
    const h = sha256File(p, f.bytes);
    if (h.sha256 !== f.sha256) {
      throw new CheckpointError(
        `${p} is corrupted: SHA-256 ${h.sha256.slice(0, 16)}… does not match the manifest's ${f.sha256.slice(0, 16)}…`,
        p,
      );
    }
  }
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** A confined file's bytes, at most `max` of them (the size was checked; a file growing meanwhile is cut). */
export function readBounded(path: string, max: number): Buffer {
  const { fd, size } = openConfined(path);
  try {
    if (size > max) throw new CheckpointError(`${path} is ${size} bytes, more than the ${max} expected`, path);
    const buf = Buffer.alloc(size);
    let at = 0;
    while (at < size) {
      const n = readSync(fd, buf, at, size - at, at);
      if (n === 0) break;
      at += n;
    }
    return buf.subarray(0, at);
  } finally {
    closeSync(fd);
  }
}
