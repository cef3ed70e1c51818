// Kernel dispatch: one Kernels object per thread (module state is per worker thread, so each rank of the
// threads transport loads its own instance and its own OpenMP thread count).
//
// Native is the default and there is no silent fallback: the TS reference is 10–100× slower, and a run that
// quietly used it would report meaningless throughput. MOE_ACTORS_KERNELS=ts selects the reference on purpose
// (e.g. where no C++ toolchain exists, or to cross-check a result).
//
// Loading the native kernels also settles three environment choices for the whole process, each only when the
// user has not set it (blasInfo() reports which): OPENBLAS_CORETYPE from the CPU's ISA (Debian's OpenBLAS falls
// back to SSE3 kernels on CPU models it does not know), OMP_WAIT_POLICY=passive (spinning OpenMP threads starve
// OpenBLAS on few cores), and OPENBLAS_THREAD_TIMEOUT=20 (idle OpenBLAS workers otherwise spin ~0.1 s after every
// call). Launchers that start ranks in worker threads must load the kernels in the main thread first.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import type { Kernels } from './kernels-api.ts';
import { RefKernels } from './kernels-ref.ts';
import { NativeKernels, type KernelsAddon } from './kernels-native.ts';

export type { Kernels, BlasInfo } from './kernels-api.ts';

/** The plain-TypeScript reference (always available; used by tests as the oracle). */
export const refKernels: Kernels = new RefKernels();

const ADDON_PATH = fileURLToPath(new URL('../../native/kernels/build/Release/kernels.node', import.meta.url));

let nativeCache: Kernels | undefined;
let selected: Kernels | undefined;

/** The native kernels; throws with the cause and the fix if the addon is not built or is stale. */
export function nativeKernels(): Kernels {
  nativeCache ??= loadNativeKernelsFrom(ADDON_PATH);
  return nativeCache;
}

/** Loads the addon at `path` (uncached; nativeKernels() is the normal entry). */
export function loadNativeKernelsFrom(path: string): Kernels {
  if (!existsSync(path)) {
    throw new Error(
      `moe-actors: native kernels are missing (${path} not found).\n` +
        '  Build them with `npm run build:native kernels` (needs a C++ compiler, pkg-config and OpenBLAS: ' +
        '`apt-get install build-essential pkg-config libopenblas-dev`).\n' +
        '  Or select the (much slower) TypeScript reference explicitly with MOE_ACTORS_KERNELS=ts.',
    );
  }
  preferPassiveOpenMpWait();
  const addon = createRequire(import.meta.url)(path) as KernelsAddon;
  const k = new NativeKernels(addon);
  sayMatmulLibraryOnce(k);
  return k;
}

/**
 * libgomp reads its wait policy once, when the addon loads it. Its default spins up to ~300 k iterations after each
 * parallel region; on 2 cores shared with OpenBLAS's threads (or with other ranks or processes) a spinning worker
 * steals the core the next kernel needs: measured here, a 2048×256 RMSNorm took 10 ms with 2 spinning threads vs
 * 0.3 ms passive. So unless the user chose (OMP_WAIT_POLICY or GOMP_SPINCOUNT set), make threads sleep at once.
 * Only the main thread can change the real process environment (a worker's process.env is a private copy), so a
 * launcher that starts ranks in workers should load the kernels in the main thread first (nativeKernels()).
 */
function preferPassiveOpenMpWait(): void {
  if (isMainThread && process.env.OMP_WAIT_POLICY === undefined && process.env.GOMP_SPINCOUNT === undefined) {
    process.env.OMP_WAIT_POLICY = 'passive';
  }
}

let said = false;

/** Without oneDNN the matmuls all run on BLAS: one line at start-up (main thread) says so and why, never a failure. */
function sayMatmulLibraryOnce(k: Kernels): void {
  if (said || !isMainThread) return;
  said = true;
  const i = k.blasInfo();
  if (i.onednn === false)
    console.warn(`moe-actors: matmuls on ${i.name} only: ${i.onednnStatus ?? 'oneDNN unavailable'}`);
}

/** The kernels of this thread: native unless MOE_ACTORS_KERNELS=ts. */
export function getKernels(): Kernels {
  if (selected) return selected;
  const choice = process.env.MOE_ACTORS_KERNELS ?? 'native';
  if (choice === 'ts') selected = refKernels;
  else if (choice === 'native') selected = nativeKernels();
  else
    throw new Error(
      `moe-actors: MOE_ACTORS_KERNELS=${choice} is not a kernel implementation; use "native" (default) or "ts".`,
    );
  return selected;
}
