// Loading the oneCCL binding (native/ccl), or saying clearly why it cannot be used (native-addon.ts). The binding
// carries native/mpi's functions as well (it compiles those sources): MPI starts the job, carries the fault channel
// and bootstraps oneCCL's key-value stores, and one request table holds MPI and oneCCL operations alike.
// MOE_ACTORS_CCL_ADDON_DIR points at another addon directory (tests use one with an UNAVAILABLE marker).

import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Arr, MpiBinding, ReduceCode } from '../mpi/native.ts';
import { tryLoadAddon } from '../native-addon.ts';

/** What oneCCL's collectives accept: MPI's arrays, int64, and bf16 bits (reduced as bfloat16). */
export type CclArr = Arr | BigInt64Array | Uint16Array;

export interface CclInitInfo {
  version: string;
  /** CCL_ATL_TRANSPORT and CCL_MPI_LIBRARY_PATH as oneCCL saw them (the binding sets them unless the user did). */
  atlTransport: string;
  mpiLibrary: string;
}

/** native/ccl/src/*.cc on top of MpiBinding. oneCCL communicators are integer handles of their own. */
export interface CclBinding extends MpiBinding {
  /** After init() (MPI with MPI_THREAD_MULTIPLE): sets the oneCCL environment defaults and calls ccl::init(). */
  cclInit(): CclInitInfo;
  /** A main key-value store on this rank, and its address (256 bytes as 64 int32s) for the others. */
  kvsMain(): { kvs: number; address: Int32Array };
  kvsJoin(address: Int32Array): number;
  /** Blocking and collective over the group: call only once every member holds the KVS. Consumes the KVS handle. */
  cclCommCreate(size: number, rank: number, kvs: number): number;
  cclCommFree(comm: number): void;
  cclAllgather(comm: number, send: CclArr, recv: CclArr): number;
  cclAllgatherv(comm: number, send: CclArr, recv: CclArr, counts: Int32Array): number;
  cclReduceScatter(comm: number, send: CclArr, recv: CclArr, op: ReduceCode): number;
  cclAllreduce(comm: number, buf: CclArr, op: ReduceCode): number;
  cclAlltoallv(comm: number, send: CclArr, sendCounts: Int32Array, recv: CclArr, recvCounts: Int32Array): number;
  cclBroadcast(comm: number, buf: CclArr, root: number): number;
  cclBarrier(comm: number): number;
}

export class CclUnavailableError extends Error {
  constructor(readonly reason: string) {
    super(`the ccl transport is unavailable: ${reason}`);
    this.name = 'CclUnavailableError';
  }
}

export type CclAvailability =
  | { available: true; addonDir: string }
  | { available: false; addonDir: string; reason: string };

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SPEC = { name: 'ccl', needs: 'oneCCL under $CCL_ROOT and MPICH', against: 'oneCCL ($CCL_ROOT) and MPICH' };

export function cclAddonDir(): string {
  return process.env.MOE_ACTORS_CCL_ADDON_DIR ?? join(ROOT, 'native', 'ccl');
}

let loaded: CclBinding | null = null;

/** Whether the ccl transport can be used here, and if not, why (loads the addon; initializes neither MPI nor oneCCL). */
export function cclAvailability(): CclAvailability {
  const dir = cclAddonDir();
  if (loaded) return { available: true, addonDir: dir };
  const r = tryLoadAddon<CclBinding>(dir, SPEC);
  if ('reason' in r) return { available: false, addonDir: dir, reason: r.reason };
  loaded = r.binding;
  return { available: true, addonDir: dir };
}

/** Refuses the ccl transport where its binding cannot load, naming the cause and the fix (before any rank starts). */
export function requireCcl(): void {
  loadCcl();
}

/** The binding, or a CclUnavailableError naming the cause and the fix. */
export function loadCcl(): CclBinding {
  const a = cclAvailability();
  if (!a.available) throw new CclUnavailableError(a.reason);
  return loaded!;
}
