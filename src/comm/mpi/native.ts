// Loading the MPI binding (native/mpi), or saying clearly why it cannot be used (native-addon.ts).
// MOE_ACTORS_MPI_ADDON_DIR points at another addon directory (tests use a temporary copy with the marker to
// exercise this path).

import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tryLoadAddon } from '../native-addon.ts';

export type ReduceCode = 0 | 1; // sum | max

export interface MpiInitInfo {
  rank: number;
  size: number;
  threadLevelRequested: 'multiple';
  threadLevelProvided: 'single' | 'funneled' | 'serialized' | 'multiple' | 'unknown';
  localRank: number;
  localSize: number;
  /** World rank of the first rank on this node: equal values mean the same node. */
  nodeLeader: number;
  processorName: string;
  worldHandle: 0;
}

export type Arr = Float32Array | Float64Array | Int32Array | Uint16Array;

/** The functions native/mpi/src/*.cc export. Communicators are integer handles; requests are integer ids. */
export interface MpiBinding {
  init(): MpiInitInfo;
  state(): { initialized: boolean; finalized: boolean };
  finalize(): void;
  abort(code: number): void;
  commSplit(comm: number, color: number, key: number): number;
  commFree(comm: number): void;
  commInfo(comm: number): { rank: number; size: number; worldRanks: Int32Array };
  libraryVersion(): string;
  iallgather(comm: number, send: Arr, recv: Arr): number;
  iallgatherv(comm: number, send: Arr, recv: Arr, counts: Int32Array): number;
  ireduceScatterBlock(comm: number, send: Arr, recv: Arr, op: ReduceCode): number;
  iallreduce(comm: number, buf: Arr, op: ReduceCode): number;
  ialltoallv(comm: number, send: Arr, sendCounts: Int32Array, recv: Arr, recvCounts: Int32Array): number;
  ibcast(comm: number, buf: Arr, root: number): number;
  ibarrier(comm: number): number;
  /** Tests `ids` until one completes or `budgetUs` passes; sets done[i] = 1 for completed ones; returns how many. */
  progress(ids: Int32Array, done: Uint8Array, budgetUs: number): number;
  faultPoll(): { source: number; message: string } | null;
  faultNotify(note: string, graceMs: number): boolean;
}

export class MpiUnavailableError extends Error {
  constructor(readonly reason: string) {
    super(`the mpi transport is unavailable: ${reason}`);
    this.name = 'MpiUnavailableError';
  }
}

export type MpiAvailability =
  | { available: true; addonDir: string; library: string }
  | { available: false; addonDir: string; reason: string };

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function addonDir(): string {
  return process.env.MOE_ACTORS_MPI_ADDON_DIR ?? join(ROOT, 'native', 'mpi');
}

let loaded: MpiBinding | null = null;

const SPEC = { name: 'mpi', needs: 'MPICH: apt-get install mpich libmpich-dev', against: 'the installed MPICH' };
const tryLoad = (dir: string) => tryLoadAddon<MpiBinding>(dir, SPEC);

/** Whether the mpi transport can be used here, and if not, why (does not initialize MPI). */
export function mpiAvailability(): MpiAvailability {
  const dir = addonDir();
  if (loaded) return { available: true, addonDir: dir, library: loaded.libraryVersion().trim().split('\n', 1)[0]! };
  const r = tryLoad(dir);
  if ('reason' in r) return { available: false, addonDir: dir, reason: r.reason };
  loaded = r.binding;
  return { available: true, addonDir: dir, library: loaded.libraryVersion().trim().split('\n', 1)[0]! };
}

/** The binding, or an MpiUnavailableError naming the cause and the fix. */
export function loadMpi(): MpiBinding {
  if (loaded) return loaded;
  const r = tryLoad(addonDir());
  if ('reason' in r) throw new MpiUnavailableError(r.reason);
  loaded = r.binding;
  return loaded;
}
