// Messages between a rank's worker and the launcher on the worker's parentPort. The control surface (status,
// dump, stop) is separate: comlink on its own MessagePort (control.ts). Tensors never travel here; they move
// through arenas (SharedArrayBuffer), and only arena handles are posted (a SharedArrayBuffer is shared, not copied).

import type { MessagePort } from 'node:worker_threads';
import type { FlightDump } from '../flight-recorder.ts';
import type { ArenaHandle } from './arena.ts';

export type ToLauncher =
  /** The rank's control surface is up and its program is about to be imported. */
  | { type: 'started' }
  /** split: the arena of the new group `key`; the launcher creates it on the first request and shares it. */
  | { type: 'arena-request'; id: number; key: string; size: number; slotBytes: number; worldRanks: number[] }
  | { type: 'arena-release'; arenaId: string }
  | { type: 'result'; ok: true; value: unknown }
  | { type: 'result'; ok: false; error: string; dump: FlightDump };

export type ToWorker =
  | { type: 'arena-reply'; id: number; handle: ArenaHandle }
  | { type: 'arena-error'; id: number; error: string };

export interface WorkerInit {
  /** file: URL of worker-main.ts, imported by bootstrap.mjs after registering tsx. */
  __entry: string;
  rank: number;
  size: number;
  module: string;
  exportName: string;
  args: unknown;
  lifeSab: SharedArrayBuffer;
  world: ArenaHandle;
  profile: string;
  timeoutMs: number;
  flightEntries: number;
  dumpDir: string | null;
  ranksPerNode: number;
  slotBytes: number;
  /** Name of the world's BroadcastChannel for buffer registrations (unique per launch). */
  buffersChannel: string;
  /** Smallest SharedArrayBuffer-backed send array (bytes) peers read in place; Infinity: never. */
  directMinBytes: number;
  control: MessagePort;
}
