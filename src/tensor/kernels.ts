// Kernel dispatch: one Kernels object per thread (module state is per worker thread, so each rank of the
// threads transport loads its own instance and its own OpenMP thread count).
//
// Native is the default and there is no silent fallback: the TS reference is 10–100× slower, and a run that
// quietly used it would report meaningless throughput. MOE_ACTORS_KERNELS=ts selects the reference on purpose
// (e.g. where no C++ toolchain exists, or to cross-check a result).
//
// Loading the native kernels also settles three environment choices for the whole process, each only when the
// user has not set it (blasInfo() reports which): OPENBLAS_CORETYPE from the CPU's ISA (Debian's OpenBLAS falls
// back to SSE3 kernels on CPU models it does not know), the OpenMP wait policy (passive, or a bounded spin when the
// launcher said the job neither uses OpenBLAS nor oversubscribes the cores: setOpenMpLayout, omp-wait.ts), and
// OPENBLAS_THREAD_TIMEOUT=20 (idle OpenBLAS workers otherwise spin ~0.1 s after every call). Launchers that start
// ranks in worker threads must load the kernels in the main thread first.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { nodeBusy } from './node-busy.ts';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import type { Kernels } from './kernels-api.ts';
import { RefKernels } from './kernels-ref.ts';
import { NativeKernels, type KernelsAddon } from './kernels-native.ts';
import { chooseOmpWait, type OmpWaitChoice } from './omp-wait.ts';
import { timedKernels } from './kernel-times.ts';
import { hasAvx512Core } from './cpu-features.ts';

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
  applyOpenMpWait(path);
  const addon = createRequire(import.meta.url)(path) as KernelsAddon;
  const k = new NativeKernels(addon);
  sayMatmulLibraryOnce(k);
  return k;
}

let ompLayout: { computeThreads?: number | undefined } | undefined;
let ompChoice: OmpWaitChoice | undefined;
/** The choice setOpenMpLayout announced: applied as announced, even if the node got busier since. */
let pendingChoice: OmpWaitChoice | undefined;

/**
 * Tells the loader how many compute threads this process's job puts on the node (ranks on the node × OpenMP
 * threads per rank; undefined = unknown, which stays passive), so the wait policy can spin where that is safe
 * (omp-wait.ts). Must come before the kernels load: libgomp reads its wait policy once, at load. Returns the choice
 * the loader will apply (null if the kernels already loaded, in which case the policy they loaded with stays).
 */
export function setOpenMpLayout(layout: { computeThreads?: number | undefined }): OmpWaitChoice | null {
  if (nativeCache) return null;
  ompLayout = layout;
  pendingChoice = decideOpenMpWait(ADDON_PATH);
  return pendingChoice;
}

/** The wait-policy choice the loader made or will make (undefined before either was asked). */
export function openMpWaitChoice(): OmpWaitChoice | undefined {
  return ompChoice;
}

/** Whether the built addon links oneDNN, read from the file (so it is known before libgomp loads with it). */
export function addonLinksOnednn(addonPath: string = ADDON_PATH): boolean {
  return existsSync(addonPath) && readFileSync(addonPath).includes('libdnnl.so');
}

function decideOpenMpWait(addonPath: string): OmpWaitChoice {
  const onednnBuilt = addonLinksOnednn(addonPath);
  const userEnv = ompChoice ? { ...process.env, ...unset(ompChoice.set) } : process.env;
  ompChoice = chooseOmpWait({
    env: userEnv,
    onednnBuilt,
    avx512: hasAvx512Core(),
    computeThreads: ompLayout?.computeThreads,
    cores: availableParallelism(),
    busy: () => nodeBusy(),
  });
  return ompChoice;
}

/** A choice made earlier by this loader is not the user's: see through it when deciding again. */
function unset(set: Record<string, string>): Record<string, undefined> {
  return Object.fromEntries(Object.keys(set).map((k) => [k, undefined]));
}

/**
 * Sets the wait policy before the addon (and with it libgomp) loads. Only the main thread can change the real
 * process environment (a worker's process.env is a private copy), so a launcher that starts ranks in workers
 * should load the kernels in the main thread first (nativeKernels()).
 */
function applyOpenMpWait(addonPath: string): void {
  if (!isMainThread) return;
  const c = pendingChoice ?? decideOpenMpWait(addonPath);
  pendingChoice = undefined;
  for (const key of ['OMP_WAIT_POLICY', 'GOMP_SPINCOUNT'] as const) if (c.mode !== 'user') delete process.env[key];
  Object.assign(process.env, c.set);
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
  const times = process.env.MOE_ACTORS_KERNEL_TIMES;
  if (times) selected = timedKernels(selected, times);
  return selected;
}
