// Whether the ccl tests can run here. They skip only where the build recorded that oneCCL (or MPICH) was not
// found — then with one printed line naming the skipped tests and why; a binding that failed to build, or is not
// built at all, must fail them instead.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cclAddonDir } from '../../src/comm/ccl/native.ts';

export function cclSkip(what: string): boolean {
  const marker = join(cclAddonDir(), 'UNAVAILABLE');
  if (!existsSync(marker)) return false;
  const why = readFileSync(marker, 'utf8').trim();
  if (!/not found/.test(why)) return false;
  console.log(`skipping ccl tests ${what}: ${why.split('\n', 1)[0]}`);
  return true;
}
