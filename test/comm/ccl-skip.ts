// Whether the ccl tests can run here. They skip only where the build recorded that oneCCL (or MPICH) was not
// found, and then the run prints ONE line naming every ccl test it skips and why (the first test file to ask
// prints it; files run in forked workers of one vitest process, which a marker in the temp folder names). A binding
// that failed to build, or is not built at all, must fail them instead.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cclAddonDir } from '../../src/comm/ccl/native.ts';

const CCL_TESTS =
  'test/comm/ccl.test.ts (conformance at 2 and 4 ranks), test/comm/ccl-train.test.ts (a 2-rank run with the probe, then a ' +
  'bit-identical resume), test/comm/ccl-faults.test.ts (a rank failing mid-dispatch), the ccl cases of test/cli/ep-ops.test.ts ' +
  '(2 and 4 ranks), the ccl case of test/cli/grad.test.ts and the ccl parity of test/runtime/parity-transports.test.ts ' +
  '(2 ranks; 4 ranks with HSDP)';

/** True when the ccl tests must skip; `_what` names the caller's tests (for readers of the call site). */
export function cclSkip(_what: string): boolean {
  const marker = join(cclAddonDir(), 'UNAVAILABLE');
  if (!existsSync(marker)) return false;
  const why = readFileSync(marker, 'utf8').trim();
  if (!/not found/.test(why)) return false;
  try {
    writeFileSync(join(tmpdir(), `moe-actors-ccl-skip-${process.ppid}`), '', { flag: 'wx' });
    console.log(`skipping the ccl tests — ${CCL_TESTS}: ${why.split('\n', 1)[0]}`);
  } catch {
    // Another file of this run printed the line already.
  }
  return true;
}
