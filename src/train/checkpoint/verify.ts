// Is a step folder a complete checkpoint? Complete = manifest.json parses, is ours, names this step, and every
// file it lists exists with the listed size (verify: "size") and SHA-256 (verify: "checksum", the default).

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { sha256File } from './atomic.ts';
import { CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, MANIFEST_NAME, type Manifest } from './format.ts';

export type VerifyLevel = 'size' | 'checksum';

export function readManifest(dir: string, expectStep?: number): Manifest {
  const p = join(dir, MANIFEST_NAME);
  if (!existsSync(p)) {
    throw new CheckpointError(`${dir} is incomplete: no ${MANIFEST_NAME} (the write did not finish — crashed or still in progress)`, p);
  }
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(p, 'utf8')) as Manifest;
  } catch (e) {
    throw new CheckpointError(`${p} is not valid JSON (${(e as Error).message})`, p);
  }
  if (m.format !== CHECKPOINT_FORMAT) throw new CheckpointError(`${p} is not a moe-actors checkpoint manifest (format ${JSON.stringify(m.format)})`, p);
  if (m.version !== CHECKPOINT_VERSION) {
    throw new CheckpointError(`${p} has format version ${m.version}; this moe-actors reads version ${CHECKPOINT_VERSION}`, p);
  }
  if (!Array.isArray(m.files) || !Number.isInteger(m.step)) throw new CheckpointError(`${p} lacks its step or file list`, p);
  if (expectStep !== undefined && m.step !== expectStep) throw new CheckpointError(`${p} says step ${m.step} but its folder is step ${expectStep}`, p);
  return m;
}

/** Throws a CheckpointError naming the first bad file; returns the manifest when the checkpoint is complete. */
export function verifyCheckpoint(dir: string, level: VerifyLevel = 'checksum', expectStep?: number): Manifest {
  const m = readManifest(dir, expectStep);
  for (const f of m.files) verifyFile(dir, f, level);
  return m;
}

export function verifyFile(dir: string, f: Manifest['files'][number], level: VerifyLevel): void {
  const p = join(dir, f.name);
  let size: number;
  try {
    size = statSync(p).size;
  } catch {
    throw new CheckpointError(`${p} is missing (listed in ${MANIFEST_NAME})`, p);
  }
  if (size !== f.bytes) throw new CheckpointError(`${p} is corrupted: ${size} bytes, the manifest lists ${f.bytes}`, p);
  if (level === 'checksum') {
    const h = sha256File(p);
    if (h.sha256 !== f.sha256) {
      throw new CheckpointError(`${p} is corrupted: SHA-256 ${h.sha256.slice(0, 16)}… does not match the manifest's ${f.sha256.slice(0, 16)}…`, p);
    }
  }
}
