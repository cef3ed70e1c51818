// Loading an optional native transport addon (native/mpi, native/ccl), or saying clearly why it cannot be used.
// scripts/build-native.mjs writes <addon>/UNAVAILABLE with the reason when a system library was missing at build
// time; the transport reports that reason instead of a loader error.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

export interface AddonSpec {
  /** Addon name: native/<name>/build/Release/<name>.node. */
  name: string;
  /** What to install for it ("MPICH: apt-get install mpich libmpich-dev"). */
  needs: string;
  /** What it is built against, for the rebuild hint ("the installed MPICH"). */
  against: string;
}

export function tryLoadAddon<T>(dir: string, spec: AddonSpec): { binding: T } | { reason: string } {
  const marker = join(dir, 'UNAVAILABLE');
  if (existsSync(marker)) return { reason: readFileSync(marker, 'utf8').trim() };
  const file = join(dir, 'build', 'Release', `${spec.name}.node`);
  const label = spec.name === 'mpi' ? 'MPI' : spec.name === 'ccl' ? 'oneCCL' : spec.name;
  if (!existsSync(file)) {
    return {
      reason: `the ${label} binding is not built (${file} is missing). Fix: \`npm run build:native ${spec.name}\` (needs ${spec.needs}).`,
    };
  }
  // UCX's mmap/brk hooks crash V8 now and then under MPICH ch4:ucx (toolchain.md); they must be off before UCX
  // initializes. This reaches the C environment only on the main thread; launchers export it for every rank.
  process.env.UCX_MEM_EVENTS ??= 'no';
  try {
    return { binding: createRequire(import.meta.url)(file) as T };
  } catch (e) {
    return {
      reason: `loading ${file} failed: ${(e as Error).message}. Fix: rebuild with \`npm run build:native ${spec.name}\` against ${spec.against}.`,
    };
  }
}
