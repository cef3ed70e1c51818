// Small pieces the commands share: checked numeric options, where this process sits in an MPI job, and input files
// that must exist (checked before any work, so a typo costs nothing and the message names the option).

import { existsSync, statSync } from 'node:fs';
import { samePath } from '../train/paths.ts';

export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}

/** `--ranks` as a positive integer, or undefined when not given. */
export function parseRanks(v: unknown, option = '--ranks'): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1)
    throw new CliError(`${option} must be a positive integer (got ${JSON.stringify(v)})`);
  return n;
}

// The trainer reads the MPI job the same way; the commands keep importing it from here.
export { mpiJob } from '../comm/launch.ts';

/** An input file given by `option` must exist and be a file. */
export function requireFile(path: string, option: string): void {
  if (!existsSync(path)) throw new CliError(`${option} ${path}: no such file`);
  if (!statSync(path).isFile()) throw new CliError(`${option} ${path}: not a file`);
}

/** An output path must not be one of the inputs: writing it would destroy the input before (or while) it is read. */
export function requireDistinctOutput(
  out: string,
  outOption: string,
  inputs: readonly (readonly [string, string])[],
): void {
  for (const [path, option] of inputs) {
    if (samePath(out, path))
      throw new CliError(
        `${outOption} ${out} is the same file as ${option} ${path}; writing it would overwrite the input — give another ${outOption} path`,
      );
  }
}
