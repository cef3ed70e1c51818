// One side pool (piscina) per process, for work beside the ranks: checkpoint writes (serialize, hash, write) and
// tokenizing. Ranks themselves never run in it (docs/architecture.md: they are long-lived and must all run at once).
//
//   inproc, mpi:  the ranks of the process live on its main thread and call the pool directly;
//   threads:      the ranks are worker threads and cannot hold the main thread's Piscina object, so the launcher
//                 serves the pool over one BroadcastChannel per rank (serveSidePool) and each rank talks to it
//                 through connectSidePool. Checkpoint staging buffers live on SharedArrayBuffers, so a task
//                 crosses threads without copying its tensors.
//
// The pool is created on first use (a run with no async checkpoint and no tokenizer starts no thread) and closed
// by the launcher when the run ends, failed or not; its threads are also let go after a short idle time, so a
// forgotten close cannot keep a finished process alive.

import { BroadcastChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { PoolTask, PoolTaskResult } from './tasks.ts';

export interface SidePool {
  run<K extends PoolTask['kind']>(task: Extract<PoolTask, { kind: K }>): Promise<PoolTaskResult<K>>;
}

const WORKER = new URL('./worker.mjs', import.meta.url).href;
/** Idle threads exit after this; a pool that is closed explicitly loses them at once. */
const IDLE_MS = 2000;

let threadsWanted = 1;
let local: Piscina | null = null;

/** Sets the size of this process's pool (before its first use; the launcher knows the ranks' compute threads). */
export function configureSidePool(threads: number): void {
  threadsWanted = Math.max(1, Math.floor(threads));
}

/** This process's pool, created on first use. */
export function processPool(): SidePool {
  return {
    run: (task) => {
      local ??= new Piscina({
        filename: WORKER,
        minThreads: 0,
        maxThreads: threadsWanted,
        idleTimeout: IDLE_MS,
        name: 'default',
      });
      return local.run(task) as Promise<never>;
    },
  };
}

/** Threads the pool holds now (0 once closed or idle). */
export function sidePoolThreads(): number {
  return local ? local.threads.length : 0;
}

/** Closes this process's pool: running tasks finish, then every thread exits. */
export async function closeSidePool(): Promise<void> {
  const p = local;
  local = null;
  if (p) await p.close();
}

interface Request {
  id: number;
  task: PoolTask;
}
type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; message: string };

const channelOf = (name: string, rank: number) => `${name}-rank-${rank}`;

/** Serves this process's pool to `ranks` rank threads (threads transport). */
export function serveSidePool(name: string, ranks: number): { close(): void } {
  const pool = processPool();
  const channels: BroadcastChannel[] = [];
  for (let r = 0; r < ranks; r++) {
    const ch = new BroadcastChannel(channelOf(name, r));
    ch.onmessage = (m) => {
      const req = (m as { data: Request | Reply }).data;
      if (!('task' in req)) return;
      pool.run(req.task as never).then(
        (value) => ch.postMessage({ id: req.id, ok: true, value } satisfies Reply),
        (e: unknown) =>
          ch.postMessage({
            id: req.id,
            ok: false,
            message: e instanceof Error ? e.message : String(e),
          } satisfies Reply),
      );
    };
    // The channel must not keep the launcher alive by itself; the launch it serves does.
    ch.unref();
    channels.push(ch);
  }
  return { close: () => channels.forEach((c) => c.close()) };
}

/** A rank thread's handle on the launcher's pool (threads transport). */
export function connectSidePool(name: string, rank: number): SidePool & { close(): void } {
  const ch = new BroadcastChannel(channelOf(name, rank));
  let next = 0;
  const waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  ch.onmessage = (m) => {
    const rep = (m as { data: Request | Reply }).data;
    if (!('ok' in rep)) return;
    const w = waiting.get(rep.id);
    if (!w) return;
    waiting.delete(rep.id);
    if (waiting.size === 0) ch.unref();
    if (rep.ok) w.resolve(rep.value);
    else w.reject(new Error(rep.message));
  };
  ch.unref();
  return {
    run: (task) =>
      new Promise((resolve, reject) => {
        const id = next++;
        waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
        // A pending reply keeps the thread alive (the rank awaits it).
        ch.ref();
        ch.postMessage({ id, task } satisfies Request);
      }),
    close: () => {
      for (const w of waiting.values())
        w.reject(new Error('the side pool connection was closed while a task was pending'));
      waiting.clear();
      ch.close();
    },
  };
}
